"""What a resumable work folder holds: manifests of stored pieces, checked files, safe removal.

A resumable job (SUN prediction today; registration, tiled inference and parameter
search next) keeps its partial results in a work folder and continues from them after
a kill. Resuming must never take a missing or damaged file for a valid one: a missing
Zarr chunk, for example, reads as its fill value, so a store that lost chunks looks
like a store of zeros. Three rules prevent that (``docs/reliability.md``):

* **Manifest.** A folder of pieces written by one process (a store of chunks, a set of
  tiles) has a :class:`Manifest`: every piece with its size and CRC-32, plus the job's
  progress (``state``), in ``manifest.json``, replaced atomically *after* the pieces it
  describes are stored. A piece rewritten between two commits (a chunk evicted from a
  cache) is first noted in ``manifest.journal`` with its new checksum, so that either
  version verifies. A resume calls :meth:`Manifest.verify`, which reads every recorded
  piece and reports the missing and damaged ones; the job recomputes them (or refuses).
  No manifest means nothing in the folder can be trusted.
* **Checked files.** Files that any of several processes may write (a cache of input
  chunks shared by SLURM array tasks) carry their own CRC-32 (:func:`write_checked`,
  :func:`read_checked`); a missing or damaged one is simply made again.
* **Removal.** :func:`remove_work_folder` first marks the folder invalid (an atomic
  marker file), then deletes the rest, the marker last. A run that finds the marker
  (a clean-up was killed) finishes the removal and starts afresh
  (:func:`discard_if_invalid`) instead of resuming from what was left.

Kills (SIGKILL, out-of-memory, a SLURM time limit) are covered; files are not fsynced,
so a power failure may lose recent pieces, which verification then reports as damaged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
JOURNAL_NAME = "manifest.journal"
#: Written into a work folder before anything in it is deleted.
INVALID_MARKER = "INVALID"
MANIFEST_VERSION = 1
_TRAILER = 4  # bytes of the CRC-32 at the end of a checked file


def checksum(data: Any) -> int:
    """CRC-32 of a bytes-like object (zlib's, about 2 GB/s on one core).

    Examples
    --------
    >>> checksum(b"abc")
    891568578
    """
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Record:
    """Size in bytes and CRC-32 of a stored piece."""

    size: int
    crc32: int


@dataclass
class Verification:
    """Result of :meth:`Manifest.verify`: names of pieces that cannot be used."""

    missing: list[str]
    damaged: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged

    @property
    def bad(self) -> list[str]:
        """Missing and damaged pieces, sorted."""
        return sorted(self.missing + self.damaged)


class Manifest:
    """The pieces stored in ``folder`` (files named relative to it) and the job's progress.

    Parameters
    ----------
    folder : path-like
        The folder of pieces; the manifest and its journal live in it.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> manifest = Manifest(folder)
    >>> manifest.load()  # nothing recorded yet
    False
    >>> manifest.write("tile_0", b"result")
    >>> manifest.commit({"tiles_done": 1})
    >>> reopened = Manifest(folder)
    >>> reopened.load(), reopened.state, reopened.verify().ok
    (True, {'tiles_done': 1}, True)
    >>> (folder / "tile_0").unlink()
    >>> reopened.verify().missing
    ['tile_0']
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.records: dict[str, Record] = {}  # the current version of every piece
        self.state: dict[str, Any] = {}
        self._sequence = 0  # number of the last commit; journal lines carry it
        self._earlier: dict[str, set[Record]] = {}  # versions a kill may have left on disk
        self._journal: Any = None

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def load(self) -> bool:
        """Read the manifest and its journal; False if there is none (or it is unreadable)."""
        self.records, self.state, self._earlier, self._sequence = {}, {}, {}, 0
        if not self.path.is_file():
            return False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {data.get('version')}")
            records = {
                str(name): Record(int(size), int(crc))
                for name, (size, crc) in data["pieces"].items()
            }
            state, sequence = dict(data["state"]), int(data["sequence"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "%s: unreadable manifest (%s); its folder is treated as empty", self.path, exc
            )
            return False
        self.records, self.state, self._sequence = records, state, sequence
        for name, record in self._journal_lines():
            if name in self.records:
                self._earlier.setdefault(name, set()).add(self.records[name])
            self.records[name] = record
        return True

    def _journal_lines(self) -> Iterable[tuple[str, Record]]:
        """Journal entries written after the current commit (a torn last line is skipped)."""
        try:
            text = (self.folder / JOURNAL_NAME).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            parts = line.split(" ")
            if (
                len(parts) == 4
                and parts[0] == str(self._sequence)
                and parts[2].isdigit()
                and parts[3].isdigit()
            ):
                yield parts[1], Record(int(parts[2]), int(parts[3]))

    def write(self, name: str, data: Any) -> None:
        """Store piece ``name`` (bytes-like ``data``) atomically, noting it in the journal first.

        Until the next :meth:`commit`, both the committed and the new version of the
        piece verify, so a kill between the journal line and the rename loses nothing.
        """
        view = memoryview(data).cast("B")
        record = Record(view.nbytes, checksum(view))
        if self._journal is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.folder / JOURNAL_NAME, "a", encoding="utf-8")  # noqa: SIM115 (kept open between writes)
        self._journal.write(f"{self._sequence} {name} {record.size} {record.crc32}\n")
        self._journal.flush()
        if name in self.records:
            self._earlier.setdefault(name, set()).add(self.records[name])
        self.records[name] = record
        with atomic_path(self.folder / name) as tmp, open(tmp, "wb") as handle:
            handle.write(view)

    def read(self, name: str) -> bytes:
        """The stored bytes of a recorded piece.

        Raises
        ------
        InputError
            If the piece is missing or has another size than recorded (it was deleted
            or truncated while the job ran).
        """
        from ..errors import InputError

        try:
            data = (self.folder / name).read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"{self.folder / name}: recorded in {self.path} but missing; something deleted it while the job ran, run it again"
            ) from None
        if len(data) != self.records[name].size:
            raise InputError(
                f"{self.folder / name}: {len(data)} bytes, {self.records[name].size} recorded in {self.path}; run the job again"
            )
        return data

    def forget(self, names: Iterable[str]) -> None:
        """Drop pieces from the records and delete their files (to recompute them)."""
        for name in names:
            self.records.pop(name, None)
            self._earlier.pop(name, None)
            (self.folder / name).unlink(missing_ok=True)

    def commit(self, state: dict[str, Any] | None = None) -> None:
        """Atomically record the current pieces and ``state`` (default: unchanged).

        Call it only after every piece it lists is stored: then the manifest never
        claims more than the folder holds.
        """
        if state is not None:
            self.state = dict(state)
        self._sequence += 1
        data = {
            "version": MANIFEST_VERSION,
            "sequence": self._sequence,
            "state": self.state,
            "pieces": {name: [r.size, r.crc32] for name, r in sorted(self.records.items())},
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(data, separators=(",", ":")))
        self._earlier.clear()
        # Lines of earlier commits are ignored anyway; emptying the journal keeps it short.
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        (self.folder / JOURNAL_NAME).unlink(missing_ok=True)

    def verify(self) -> Verification:
        """Read every recorded piece and check its size and CRC-32.

        A piece passes if it matches its current record or (for a piece rewritten after
        the last commit) the version it replaced; the record then follows the file.
        """
        missing, damaged = [], []
        for name, record in sorted(self.records.items()):
            try:
                data = (self.folder / name).read_bytes()
            except FileNotFoundError:
                missing.append(name)
                continue
            found = Record(len(data), checksum(data))
            if found in self._earlier.get(
                name, ()
            ):  # killed between the journal line and the rename
                self.records[name] = found
            elif found != record:
                damaged.append(name)
        return Verification(missing, damaged)

    def close(self) -> None:
        """Close the journal (also done by :meth:`commit`)."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def write_checked(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` followed by its CRC-32 (4 bytes, little-endian).

    For files several processes may write with the same content (caches): the file
    itself tells whether it is complete, no shared manifest needed.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "chunk"
    >>> write_checked(path, b"abc")
    >>> read_checked(path, 3)[:3]
    b'abc'
    >>> path.write_bytes(b"abd" + path.read_bytes()[3:])
    7
    >>> read_checked(path, 3) is None
    True
    """
    view = memoryview(data).cast("B")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(view)
        handle.write(checksum(view).to_bytes(_TRAILER, "little"))


def read_checked(path: str | os.PathLike, size: int, verify: bool = True) -> bytes | None:
    """The ``size`` data bytes of a file from :func:`write_checked`; None if missing or damaged.

    ``verify=False`` checks only the size (for a file this process has verified before).
    The result holds the checksum after the data: slice or use ``numpy.frombuffer(...,
    count=...)``.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) != size + _TRAILER:
        return None
    if verify and checksum(memoryview(data)[:size]) != int.from_bytes(data[size:], "little"):
        return None
    return data


def remove_work_folder(path: str | os.PathLike) -> None:
    """Delete a work folder so that a kill at any point leaves no folder that looks resumable.

    The folder is first marked invalid (:data:`INVALID_MARKER`, written atomically),
    then everything else is deleted, the marker last.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "work"
    >>> (folder / "store").mkdir(parents=True)
    >>> remove_work_folder(folder)
    >>> folder.exists()
    False
    """
    folder = Path(path)
    if not folder.is_dir():
        return
    write_text_atomic(
        folder / INVALID_MARKER, "this work folder is being deleted; nothing in it is valid\n"
    )
    for child in folder.iterdir():
        if child.name == INVALID_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    (folder / INVALID_MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def discard_if_invalid(path: str | os.PathLike) -> bool:
    """Finish removing a work folder whose removal was interrupted; True if there was one.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / INVALID_MARKER).write_text("")
    >>> discard_if_invalid(folder), folder.exists()
    (True, False)
    """
    folder = Path(path)
    if not (folder / INVALID_MARKER).exists():
        return False
    logger.warning("%s: its removal was interrupted; removing the rest and starting afresh", folder)
    remove_work_folder(folder)
    return True


__all__ = [
    "INVALID_MARKER",
    "Manifest",
    "Record",
    "Verification",
    "checksum",
    "discard_if_invalid",
    "read_checked",
    "remove_work_folder",
    "write_checked",
]
