"""The one interface both catalogue backends (SciCat server, embedded SQLite) implement."""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .extract import CONTENT_KEY, PATH_KEY, DatasetRecord
from .files import canonical_path
from .query import Condition, Query, SearchPage
from .units import is_known_unit, to_si

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestResult:
    """Outcome of :meth:`Catalogue.ingest`.

    Attributes
    ----------
    pid : str or None
        The dataset's PID (None for a dry run of a new dataset).
    action : {"create", "update", "none"}
        What was (or, in a dry run, would be) done: a new dataset, an update of the
        existing one, or nothing because the same files are already catalogued.
    dry_run : bool
    record : DatasetRecord
    """

    pid: str | None
    action: str
    dry_run: bool
    record: DatasetRecord


class Catalogue(abc.ABC):
    """Ingest, search and read datasets; see :class:`~.sqlite.SQLiteCatalogue` and
    :class:`~.scicat.SciCatCatalogue`."""

    def ingest(
        self, record: DatasetRecord, *, dry_run: bool = False, update: bool = False
    ) -> IngestResult:
        """Add a dataset unless the same files are already catalogued.

        Parameters
        ----------
        record : DatasetRecord
            From :func:`~.extract.extract_dataset`.
        dry_run : bool
            Only report what would be done; nothing is written.
        update : bool
            If the files are already catalogued, replace the dataset's descriptive
            fields (name, description, keywords, scientific metadata) with the record's.
        """
        existing = self.find_content(record.content_key)
        if existing is not None:
            action = "update" if update else "none"
            if update and not dry_run:
                self._update(existing, record)
            logger.info("%s: already catalogued as %s (%s)", record.path, existing, action)
            return IngestResult(existing, action, dry_run, record)
        if dry_run:
            return IngestResult(None, "create", True, record)
        pid = self._create(record)
        logger.info("%s: catalogued as %s", record.path, pid)
        return IngestResult(pid, "create", False, record)

    def find_content(self, key: str) -> str | None:
        """PID of the dataset with this content key, or None."""
        page = self.search(Query(conditions=(Condition(CONTENT_KEY, "=", key),), limit=1))
        return page.datasets[0]["pid"] if page.datasets else None

    def find_path(self, path: str | Path) -> str | None:
        """PID of the newest dataset catalogued from this file or folder (by its canonical path), or None."""
        condition = Condition(PATH_KEY, "=", str(canonical_path(path)))
        page = self.search(Query(conditions=(condition,), limit=1))
        return page.datasets[0]["pid"] if page.datasets else None

    def resolve_inputs(self, references: Sequence[str]) -> list[str]:
        """Turn PIDs or paths of catalogued data into PIDs (inputs of a derived dataset).

        Raises
        ------
        InputError
            If a reference is neither a known PID nor the path of a catalogued dataset.
        """
        pids = []
        for reference in references:
            if Path(reference).exists():
                pid = self.find_path(reference)
                if pid is None:
                    raise InputError(f"input {reference}: not catalogued yet; ingest it first")
            else:
                try:
                    pid = self.get(reference)["pid"]
                except InputError:
                    raise InputError(
                        f"input {reference}: neither a catalogued PID nor an existing path"
                    ) from None
            pids.append(pid)
        return pids

    @abc.abstractmethod
    def search(self, query: Query) -> SearchPage:
        """Return one page of the datasets matching ``query`` and the total count."""

    @abc.abstractmethod
    def get(self, pid: str) -> dict:
        """Return the dataset document with this PID.

        Raises
        ------
        InputError
            If no dataset has this PID.
        """

    @abc.abstractmethod
    def files(self, pid: str) -> list[dict]:
        """Return the files of a dataset (its OrigDatablocks' ``dataFileList`` entries)."""

    @abc.abstractmethod
    def _create(self, record: DatasetRecord) -> str:
        """Store a new dataset and its OrigDatablock; return the PID."""

    @abc.abstractmethod
    def _update(self, pid: str, record: DatasetRecord) -> None:
        """Replace the descriptive fields of an existing dataset."""


def updatable_fields(record: DatasetRecord) -> dict:
    """The fields :meth:`Catalogue.ingest` with ``update=True`` replaces."""
    body = record.dataset.model_dump(mode="json", exclude_none=True)
    return {
        k: body[k]
        for k in ("datasetName", "description", "keywords", "scientificMetadata")
        if k in body
    }


def add_si_values(metadata: dict) -> dict:
    """Copy of scientific metadata with ``valueSI``/``unitSI`` next to numeric values
    that carry a known unit, as SciCat adds them on ingestion."""
    out: dict = {}
    for key, value in metadata.items():
        if isinstance(value, dict) and "value" in value:
            leaf = dict(value)
            number, unit = leaf.get("value"), leaf.get("unit") or ""
            if (
                isinstance(number, (int, float))
                and not isinstance(number, bool)
                and is_known_unit(unit)
            ):
                leaf["valueSI"], leaf["unitSI"] = to_si(number, unit)
            out[key] = leaf
        elif isinstance(value, dict):
            out[key] = add_si_values(value)
        else:
            out[key] = value
    return out


def metadata_leaves(metadata: dict, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """Yield ``(dotted key, value, unit)`` for every ``{"value", "unit"}`` entry."""
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "value" in value:
            yield name, value.get("value"), str(value.get("unit") or "")
        elif isinstance(value, dict):
            yield from metadata_leaves(value, f"{name}.")


def document_strings(value: Any) -> Iterator[str]:
    """Every string in a (nested) document: what a MongoDB wildcard text index covers."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from document_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from document_strings(item)
