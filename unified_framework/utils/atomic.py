"""Write files and folders so that readers never see a half-written result."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, describe_os_error

# Failures that say the destination cannot take the output (not a fault in the data).
_OUTPUT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` on success.

    Works for files and for folders (TIFF slice folders, Zarr stores, DICOM series).
    The temporary name lives in the same directory so the final ``rename`` is atomic on
    POSIX file systems. On any exception the temporary is removed and ``path`` is left
    untouched; when the destination itself cannot be written (no permission, read-only
    or full disk) that becomes a one-line :class:`~unified_framework.errors.InputError`.

    Parameters
    ----------
    path : path-like
        The final destination.

    Yields
    ------
    pathlib.Path
        Where the caller must write.

    Raises
    ------
    InputError
        If the folder of ``path`` cannot be created or written to.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "scores.csv") as tmp:
    ...     _ = tmp.write_text("label,dice\\n1,0.9\\n")
    >>> sorted(p.name for p in folder.iterdir())
    ['scores.csv']
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(final, exc) from exc
    # Keep the suffix so libraries that dispatch on it (nibabel: .nii.gz) still work.
    suffix = "".join(final.suffixes)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    tmp = final.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            # A directory cannot be replaced atomically; move the old one aside first.
            old = final.with_name(f".{stem}.old-{uuid.uuid4().hex[:8]}{suffix}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if isinstance(exc, OSError) and _about_output(exc, final, tmp):
            raise _unwritable(final, exc) from exc
        raise


def _about_output(exc: OSError, final: Path, tmp: Path) -> bool:
    """True if ``exc`` is about the destination: its folder, the temporary or the final name.

    Errors about other files (an input read lazily while writing) are left as they are;
    so are errors without an errno (they are not the file system's answer).
    """
    if exc.errno not in _OUTPUT_ERRNOS:
        return False
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if not names:  # e.g. h5py and write(2) failures name no file
        return True
    return any(n in (str(final), str(final.parent)) or n.startswith(str(tmp)) for n in names)


def _unwritable(final: Path, exc: OSError) -> InputError:
    return InputError(
        f"{final}: cannot write ({describe_os_error(exc, names=False)}); expected a destination in a folder you may write to with free space"
    )


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
