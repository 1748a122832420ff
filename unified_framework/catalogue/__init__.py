"""Catalogue of beamline datasets: metadata extraction, ingestion and search.

One interface (:class:`Catalogue`), two backends: a SciCat server (API v3 or v4) when
``[scicat] url`` is configured, otherwise an embedded SQLite catalogue at
``load_config()["catalogue"]`` (``MDLMA_CATALOGUE``). See ``docs/catalogue.md``.

Examples
--------
>>> from unified_framework.catalogue import open_catalogue, extract_dataset, Query, parse_condition
>>> catalogue = open_catalogue()                                          # doctest: +SKIP
>>> record = extract_dataset("scan.h5", **identity_from_config())         # doctest: +SKIP
>>> catalogue.ingest(record).pid                                          # doctest: +SKIP
'local/6f1c...'
>>> page = catalogue.search(Query("implant", conditions=[parse_condition("voxel_size<2 um")]))  # doctest: +SKIP
>>> page.total, [d["datasetName"] for d in page.datasets]                 # doctest: +SKIP
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

from .base import Catalogue, IngestResult
from .extract import (
    CONTENT_KEY,
    PATH_KEY,
    DatasetRecord,
    dataset_path,
    extract_dataset,
    metadata_value,
)
from .files import canonical_path
from .query import (
    MAX_SKIP,
    MAX_TERMS,
    MAX_TEXT_CHARS,
    SORT_FIELDS,
    Condition,
    Query,
    SearchPage,
    parse_condition,
    parse_time,
)
from .scicat import SciCatCatalogue
from .sqlite import SQLiteCatalogue
from .tags import TAG_GROUPS, format_tags
from .thumbnail import thumbnail_slice
from .units import KNOWN_UNITS, to_si

__all__ = [
    "CONTENT_KEY",
    "KNOWN_UNITS",
    "MAX_SKIP",
    "MAX_TEXT_CHARS",
    "MAX_TERMS",
    "PATH_KEY",
    "SORT_FIELDS",
    "TAG_GROUPS",
    "Catalogue",
    "Condition",
    "DatasetRecord",
    "IngestResult",
    "Query",
    "SQLiteCatalogue",
    "SciCatCatalogue",
    "SearchPage",
    "canonical_path",
    "dataset_path",
    "extract_dataset",
    "format_tags",
    "identity_from_config",
    "metadata_value",
    "open_catalogue",
    "parse_condition",
    "parse_time",
    "thumbnail_slice",
    "to_si",
]


def open_catalogue(config: dict[str, Any] | None = None) -> Catalogue:
    """The configured catalogue: SciCat if ``scicat.url`` is set, else the SQLite file.

    Parameters
    ----------
    config : dict, optional
        As returned by :func:`unified_framework.config.load_config` (read if not given).
        SciCat credentials come from ``scicat.token`` or ``scicat.username`` and
        ``scicat.password`` (``MDLMA_SCICAT_TOKEN``, ``MDLMA_SCICAT_USERNAME``,
        ``MDLMA_SCICAT_PASSWORD``).
    """
    if config is None:
        from ..config import load_config

        config = load_config()
    scicat = config.get("scicat") or {}
    if scicat.get("url"):
        return SciCatCatalogue(
            scicat["url"],
            token=scicat.get("token") or None,
            username=scicat.get("username") or None,
            password=scicat.get("password") or None,
        )
    return SQLiteCatalogue(config["catalogue"])


def identity_from_config(config: dict[str, Any] | None = None) -> dict[str, str]:
    """Ownership fields for :func:`extract_dataset` from ``[scicat]``, else from the system.

    Keys ``owner``, ``owner_group``, ``contact_email``, ``creation_location``; the
    defaults are the login name, its primary group, ``login@host`` and the host name.
    """
    if config is None:
        from ..config import load_config

        config = load_config()
    scicat = config.get("scicat") or {}
    user = getpass.getuser()
    return {
        "owner": scicat.get("owner") or user,
        "owner_group": scicat.get("owner_group") or _primary_group(),
        "contact_email": scicat.get("contact_email") or f"{user}@{socket.gethostname()}",
        "creation_location": scicat.get("creation_location") or socket.gethostname(),
    }


def _primary_group() -> str:
    try:
        import grp
        import os

        return grp.getgrgid(os.getgid()).gr_name
    except (ImportError, KeyError):  # no grp on Windows; gid without a name
        return getpass.getuser()
