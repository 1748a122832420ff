"""Reading the end of log files that are still being written."""

from __future__ import annotations

from pathlib import Path


def tail(path: str | Path, max_lines: int = 200, max_bytes: int = 256 * 1024) -> str:
    """The last ``max_lines`` lines of a text file, reading at most ``max_bytes`` from its end.

    Undecodable bytes are replaced, and a line cut by the byte limit is dropped, so a
    huge or binary log never stalls the page.
    """
    path = Path(path)
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - max_bytes)
        handle.seek(start)
        raw = handle.read()
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if start > 0 and lines:
        lines = lines[1:]
    return "\n".join(lines[-max_lines:])
