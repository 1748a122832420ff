"""Confine the dashboard's file reading to the user's own job roots.

The viewer shows files named in URLs and job records; every such path goes through
:func:`resolve_inside`, which follows symlinks and ``..`` first and then checks that
the real location lies below one of the allowed roots (``MDLMA_HOME`` and the working
directories recorded for the user's jobs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from unified_framework.errors import InputError, describe_os_error
from unified_framework.utils.text import shorten


class PathRefused(InputError):
    """A path resolves outside every allowed root."""


def real_roots(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve the roots (following symlinks), dropping duplicates and empty entries."""
    seen: list[Path] = []
    for root in roots:
        if not root:
            continue
        real = Path(root).expanduser().resolve()
        if real not in seen:
            seen.append(real)
    return seen


def resolve_inside(
    path: str | os.PathLike,
    roots: Iterable[str | os.PathLike],
    base: str | os.PathLike | None = None,
) -> Path:
    """Return the real path of ``path`` if it lies below one of ``roots``.

    Parameters
    ----------
    path : path-like
        Absolute, or relative to ``base``.
    roots : iterable of path-like
        Allowed folders; a path equal to a root is allowed.
    base : path-like, optional
        Folder that a relative ``path`` is taken from (default: refuse relative paths).

    Returns
    -------
    pathlib.Path
        The resolved path (it need not exist).

    Raises
    ------
    PathRefused
        If the resolved path is outside every root, or relative without ``base``.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise PathRefused(f"{shorten(text)}: not a valid path")
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        if base is None:
            raise PathRefused(f"{shorten(text)}: expected an absolute path")
        candidate = Path(base) / candidate
    try:
        real = candidate.resolve()
        real.exists()  # raises for names longer than the file system allows
    except (OSError, RuntimeError) as exc:
        what = describe_os_error(exc, names=False) if isinstance(exc, OSError) else "symlink loop"
        raise PathRefused(f"{shorten(text)}: not a usable path ({what})") from None
    for root in real_roots(roots):
        if real == root or real.is_relative_to(root):
            return real
    raise PathRefused(
        f"{shorten(text)}: outside your job folders; the dashboard only reads below them"
    )


def allowed(
    candidates: Iterable[str | os.PathLike], roots: Iterable[str | os.PathLike]
) -> list[Path]:
    """The resolved candidates that lie below a root (others, e.g. symlinks out, dropped)."""
    roots = real_roots(roots)
    kept: list[Path] = []
    for candidate in candidates:
        try:
            real = resolve_inside(candidate, roots)
        except PathRefused:
            continue
        if real not in kept:
            kept.append(real)
    return kept


def walk_files(
    folder: Path, match: Callable[[Path], bool], max_depth: int = 3, limit: int = 200
) -> list[Path]:
    """Entries below ``folder`` for which ``match`` is true, without descending into them.

    Hidden entries and symlinked folders are skipped; at most ``max_depth`` folder levels
    are visited and at most ``limit`` results returned, so a huge working directory
    cannot stall a page.
    """
    found: list[Path] = []

    def walk(current: Path, depth: int) -> None:
        try:
            entries = sorted(current.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit or entry.name.startswith("."):
                continue
            if match(entry):
                found.append(entry)
            elif depth < max_depth and entry.is_dir() and not entry.is_symlink():
                walk(entry, depth + 1)

    walk(Path(folder), 0)
    return found
