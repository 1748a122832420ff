"""The metrics log of a training run: one JSON object a line, with a ``step`` each.

SUN and VoxelMorph training write it and the dashboard's job viewer plots it. A run
resumed from a checkpoint first cuts the lines written after that checkpoint, so the
log never holds a step twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic


def append_metrics(path: Path, line: dict[str, Any]) -> None:
    """Append one metrics line (a JSON object with a ``step``) to the log at ``path``.

    Examples
    --------
    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> append_metrics(log, {"step": 1, "loss": 0.5})
    >>> log.read_text()
    '{"step": 1, "loss": 0.5}\\n'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines written after ``step`` (a resumed run writes them again).

    A line cut short by a kill is dropped too; the log is replaced atomically.

    Examples
    --------
    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> _ = log.write_text('{"step": 1}\\n{"step": 2}\\n{"st')
    >>> truncate_metrics(log, 1)
    >>> log.read_text()
    '{"step": 1}\\n'
    """
    if not path.is_file():
        return
    kept = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(text)["step"] <= step:
                kept.append(text)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    write_text_atomic(path, "".join(line + "\n" for line in kept))
