"""The files of a dataset: listing, streaming checksums and the idempotency key.

A dataset is either one file (``scan.h5``: its folder is the SciCat ``sourceFolder``)
or one folder (a DICOM series, a TIFF slice stack, a ``.zarr`` store: the folder itself
is the ``sourceFolder``). File paths in the OrigDatablock are relative to it. Both are
canonical (:func:`canonical_path`): the same files reached through a relative path, a
symlinked folder or ``..`` are the same dataset.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

from pyscicat.model import DataFile
from tqdm.auto import tqdm

from ..errors import InputError
from .query import format_time

#: Checksum algorithm recorded in the OrigDatablock (``chkAlg``).
CHECKSUM_ALGORITHM = "sha256"
_BLOCK_SIZE = 1 << 20  # 1 MiB: large enough for throughput, small enough for memory


def canonical_path(path: str | os.PathLike) -> Path:
    """The absolute path of ``path`` with every symlink and ``..`` resolved: a dataset's identity.

    Examples
    --------
    >>> canonical_path("/data/p05/../p05/scan.h5")   # doctest: +SKIP
    PosixPath('/data/p05/scan.h5')
    """
    return Path(path).expanduser().resolve()


def dataset_files(path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """Return the ``sourceFolder`` of the dataset at ``path`` and its files, sorted.

    Hidden files (names starting with ``.``) are included only inside Zarr stores,
    where ``.zarray``/``.zattrs`` are data.

    Raises
    ------
    InputError
        If ``path`` does not exist or a folder holds no files.
    """
    path = canonical_path(path)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    is_zarr = (path / ".zarray").exists() or (path / ".zgroup").exists()
    files: list[Path] = []
    for root, dirs, names in os.walk(path):
        if not is_zarr:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            names = [n for n in names if not n.startswith(".")]
        files.extend(Path(root) / n for n in names if (Path(root) / n).is_file())
    if not files:
        raise InputError(f"{path}: folder holds no files")
    return path, sorted(files)


def file_checksum(path: str | os.PathLike, *, progress: tqdm | None = None) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (constant memory for any file size).

    Parameters
    ----------
    path : path-like
    progress : tqdm, optional
        A byte-counting progress bar to advance while reading.
    """
    digest = hashlib.new(CHECKSUM_ALGORITHM)
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK_SIZE):
            digest.update(block)
            if progress is not None:
                progress.update(len(block))
    return digest.hexdigest()


def describe_files(
    source_folder: Path, files: list[Path], *, progress: bool = False
) -> list[DataFile]:
    """SciCat ``DataFile`` entries (relative path, size, time, checksum, owner, mode).

    Parameters
    ----------
    source_folder : Path
        Folder the paths are made relative to.
    files : list of Path
    progress : bool
        Show a byte progress bar (on a terminal) while checksumming.
    """
    stats = [f.stat() for f in files]
    total = sum(s.st_size for s in stats)
    entries = []
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="checksum",
        leave=False,
        disable=None if progress else True,
    ) as bar:
        for file, stat in zip(files, stats):
            entries.append(
                DataFile(
                    path=file.relative_to(source_folder).as_posix(),
                    size=stat.st_size,
                    time=format_time(dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)),
                    chk=file_checksum(file, progress=bar),
                    uid=str(stat.st_uid),
                    gid=str(stat.st_gid),
                    perm=oct(stat.st_mode & 0o777),
                )
            )
    return entries


def content_key(
    source_folder: Path | str, entries: list[DataFile], array: str | None = None
) -> str:
    """Idempotency key of a dataset: hash of its ``sourceFolder`` and file checksums.

    Re-ingesting the same files from the same place gives the same key, so the
    catalogue finds the existing dataset instead of creating a duplicate; changed
    content (or a copy elsewhere) gives a new key. ``array`` names one of several
    arrays of an HDF5 file or Zarr group (``scan.h5::/entry/recon``): each is a dataset.
    """
    digest = hashlib.sha256(str(source_folder).encode())
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(b"\0" + entry.path.encode() + b"\0" + (entry.chk or "").encode())
    if array is not None:
        digest.update(b"\0::" + array.encode())
    return digest.hexdigest()
