"""Reports of the analysis: one JSON document and a CSV table (one row per sample).

Both are written atomically (nothing half-written). Non-finite numbers become JSON
``null`` and empty CSV cells, so statistics packages read them as missing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.atomic import write_text_atomic

#: Version of the report's JSON layout.
REPORT_FORMAT = "mdlma-analysis/1"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def to_json(document: dict[str, Any]) -> str:
    """The document as JSON text (NaN and infinity as ``null``).

    Examples
    --------
    >>> to_json({"a": float("nan"), "b": np.float32(1.5)})
    '{\\n  "a": null,\\n  "b": 1.5\\n}'
    """
    return json.dumps(_clean(document), indent=2, allow_nan=False)


def write_json(path: str | Path, document: dict[str, Any]) -> Path:
    """Write a report document atomically; adds ``format``."""
    return write_text_atomic(path, to_json({"format": REPORT_FORMAT, **document}))


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV text; the columns are the union of the rows' keys in first-seen order.

    Examples
    --------
    >>> print(csv_text([{"sample": "a", "v": 1.0}, {"sample": "b", "w": None}]).strip())
    sample,v,w
    a,1.0,
    b,,
    """
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if _clean(row.get(k)) is None else _clean(row.get(k))) for k in columns}
        )
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as a CSV table atomically."""
    return write_text_atomic(path, csv_text(rows))


def read_report(path: str | Path) -> dict[str, Any]:
    """Read a report written by :func:`write_json` (for the dashboard).

    Raises
    ------
    InputError
        If the file is not JSON or not an analysis report.
    """
    from ..errors import InputError

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not a readable analysis report ({exc.__class__.__name__})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != REPORT_FORMAT:
        raise InputError(f"{path}: not an analysis report (format {REPORT_FORMAT} expected)")
    return document
