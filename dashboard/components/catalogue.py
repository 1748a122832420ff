"""Catalogue page logic without Streamlit: the search form's query, the result and detail
tables, and the templates a catalogued dataset can be used in.

The page (``views/catalogue.py``) draws these; the tests call them directly.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import pandas as pd

from unified_framework.catalogue import Query, metadata_value, parse_condition
from unified_framework.catalogue.base import metadata_leaves
from unified_framework.errors import InputError

#: Result-table columns, in order.
RESULT_COLUMNS = (
    "pid",
    "name",
    "type",
    "created",
    "format",
    "shape",
    "voxel size",
    "size MB",
    "files",
    "owner group",
)


def build_query(
    *,
    text: str = "",
    conditions: str = "",
    dataset_type: str | None = None,
    created_from: dt.date | None = None,
    created_to: dt.date | None = None,
    owner_groups: str = "",
    keywords: str = "",
    sort: str = "creationTime",
    descending: bool = True,
    page: int = 1,
    per_page: int = 25,
) -> Query:
    """The :class:`Query` of the search form's fields.

    Parameters
    ----------
    text : str
        Free text.
    conditions : str
        One metadata condition per line, e.g. ``voxel_size < 10 um``.
    dataset_type : {"raw", "derived"}, optional
    created_from, created_to : date, optional
        Inclusive date range (whole days, UTC).
    owner_groups, keywords : str
        Comma-separated lists.
    sort, descending, page, per_page
        Ordering and paging (``page`` counts from 1).

    Raises
    ------
    InputError
        Naming the form field and, for conditions, the line that is wrong.
    """
    parsed = []
    for number, line in enumerate(conditions.splitlines(), start=1):
        if line.strip():
            try:
                parsed.append(parse_condition(line.strip()))
            except InputError as exc:
                raise InputError(f"Metadata conditions, line {number}: {exc}") from None
    if created_from and created_to and created_from > created_to:
        raise InputError(f"Created: the range starts {created_from} after it ends {created_to}")
    start = dt.datetime.combine(created_from, dt.time.min, dt.UTC) if created_from else None
    end = dt.datetime.combine(created_to, dt.time.max, dt.UTC) if created_to else None
    return Query(
        text=text.strip(),
        conditions=tuple(parsed),
        created_from=start,
        created_to=end,
        dataset_type=dataset_type or None,
        owner_groups=_comma_list(owner_groups),
        keywords=_comma_list(keywords),
        skip=(page - 1) * per_page,
        limit=per_page,
        sort=sort,
        descending=descending,
    )


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _voxel_size(dataset: dict) -> str:
    value = metadata_value(dataset, "voxel_size")
    if value is None:
        return ""
    return f"{value:g} {dataset['scientificMetadata']['voxel_size'].get('unit') or ''}".strip()


def results_table(datasets: Sequence[dict]) -> pd.DataFrame:
    """One row per dataset of a search page, columns :data:`RESULT_COLUMNS`."""
    rows = []
    for d in datasets:
        shape = metadata_value(d, "shape")
        size = d.get("size")
        rows.append(
            {
                "pid": d.get("pid", ""),
                "name": d.get("datasetName", ""),
                "type": d.get("type", ""),
                "created": str(d.get("creationTime", ""))[:19].replace("T", " "),
                "format": metadata_value(d, "format") or "",
                "shape": " x ".join(map(str, shape)) if isinstance(shape, list) else "",
                "voxel size": _voxel_size(d),
                "size MB": round(size / 1e6, 2) if isinstance(size, (int, float)) else None,
                "files": d.get("numberOfFiles"),
                "owner group": d.get("ownerGroup", ""),
            }
        )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def metadata_table(dataset: dict) -> pd.DataFrame:
    """The scientific metadata as ``key, value, unit`` rows (nested keys dotted)."""
    rows = [
        {
            "key": key,
            "value": json.dumps(value) if isinstance(value, (list, dict)) else str(value),
            "unit": unit,
        }
        for key, value, unit in metadata_leaves(dataset.get("scientificMetadata") or {})
    ]
    return pd.DataFrame(rows, columns=["key", "value", "unit"])


def files_table(files: Sequence[dict]) -> pd.DataFrame:
    """The dataset's files: path, size and checksum."""
    return pd.DataFrame(
        [
            {"path": f.get("path", ""), "size": f.get("size"), "checksum": f.get("chk", "")}
            for f in files
        ],
        columns=["path", "size", "checksum"],
    )


def slice_count(dataset: dict) -> int:
    """Number of ``z`` slices of a 3-D dataset, 1 for images and unknown shapes."""
    shape = metadata_value(dataset, "shape")
    return int(shape[0]) if isinstance(shape, list) and len(shape) == 3 else 1


def input_parameters(template) -> list[str]:
    """Parameters of a job template that take a catalogued dataset (``dataset: true`` in ``form.yml``)."""
    return [name for name, p in template.parameters.items() if p.dataset and not p.locked]
