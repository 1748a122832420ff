"""The embedded catalogue: one SQLite file, used when no SciCat server is configured.

Datasets are stored as the same JSON documents SciCat returns, plus three indexes:

* ``datasets_fts`` (FTS5, Porter stemming): name, description, keywords, the strings of
  the scientific metadata, and every other string of the document;
* ``metadata``: one row per scientific-metadata entry with its value as number or text
  and, when it has a known unit, its SI value, so ``voxel_size > 0.5 um`` is an index
  range scan;
* ``keywords``.

Writes run in ``BEGIN IMMEDIATE`` transactions on a WAL database, so the dashboard can
search while an ingestion runs, and the content key is ``UNIQUE``, so two concurrent
ingestions of the same files still create one dataset.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from .base import Catalogue, add_si_values, document_strings, metadata_leaves, updatable_fields
from .extract import DatasetRecord
from .query import Query, SearchPage, format_time, parse_time
from .units import is_known_unit, to_si

#: Prefix of PIDs minted by the embedded catalogue.
PID_PREFIX = "local"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    pid TEXT NOT NULL UNIQUE,
    content_key TEXT UNIQUE,
    type TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    owner_group TEXT NOT NULL,
    creation_time TEXT NOT NULL,
    size INTEGER NOT NULL,
    number_of_files INTEGER NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_creation_time ON datasets (creation_time);
CREATE INDEX IF NOT EXISTS datasets_dataset_name ON datasets (dataset_name);
CREATE INDEX IF NOT EXISTS datasets_size ON datasets (size);
CREATE INDEX IF NOT EXISTS datasets_owner_group ON datasets (owner_group);
CREATE TABLE IF NOT EXISTS keywords (
    keyword TEXT NOT NULL,
    dataset INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    PRIMARY KEY (keyword, dataset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metadata (
    dataset INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    num REAL,
    text TEXT,
    value_si REAL,
    unit_si TEXT
);
CREATE INDEX IF NOT EXISTS metadata_si ON metadata (key, unit_si, value_si);
CREATE INDEX IF NOT EXISTS metadata_num ON metadata (key, num);
CREATE INDEX IF NOT EXISTS metadata_text ON metadata (key, text);
CREATE INDEX IF NOT EXISTS metadata_dataset ON metadata (dataset);
CREATE TABLE IF NOT EXISTS origdatablocks (
    id TEXT PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS origdatablocks_dataset ON origdatablocks (dataset);
CREATE VIRTUAL TABLE IF NOT EXISTS datasets_fts USING fts5 (
    name, description, keywords, metadata, other, tokenize = 'porter unicode61'
);
"""
_SORT_COLUMNS = {
    "creationTime": "d.creation_time",
    "datasetName": "d.dataset_name",
    "size": "d.size",
    "numberOfFiles": "d.number_of_files",
}
_OPERATORS = {"=": "=", ">": ">", "<": "<"}


class SQLiteCatalogue(Catalogue):
    """Catalogue in a local SQLite file (created on first use).

    Parameters
    ----------
    path : path-like
        The database file, e.g. ``load_config()["catalogue"]``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise InputError(
                    f"{self.path}: catalogue schema {version} is newer than this framework"
                )
            if version < _SCHEMA_VERSION:
                conn.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {_SCHEMA_VERSION};COMMIT;"
                )

    def __repr__(self) -> str:
        return f"SQLiteCatalogue({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread, kept open: the object can be shared by dashboard
        # threads, and the WAL file is not checkpointed and removed after every call.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise InputError(f"{self.path}: cannot open the catalogue ({exc})") from None
            self._local.conn = conn
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise InputError(f"{self.path}: not a usable catalogue database ({exc})") from None

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- reading -----------------------------------------------------------------------

    def search(self, query: Query) -> SearchPage:
        where, params = _where(query)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if query.descending else "ASC"
        order = f"{_SORT_COLUMNS[query.sort]} {direction}, d.id"
        with self._connect() as conn:
            total = conn.execute(f"SELECT count(*) FROM datasets d {clause}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT d.document FROM datasets d {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, query.limit, query.skip],
            ).fetchall()
        return SearchPage([json.loads(r[0]) for r in rows], total, query.skip, query.limit)

    def get(self, pid: str) -> dict:
        with self._connect() as conn:
            row = conn.execute("SELECT document FROM datasets WHERE pid = ?", (pid,)).fetchone()
        if row is None:
            raise InputError(f"dataset {pid!r}: not in the catalogue {self.path}")
        return json.loads(row[0])

    def files(self, pid: str) -> list[dict]:
        with self._connect() as conn:
            dataset_id = self._dataset_id(conn, pid)
            rows = conn.execute(
                "SELECT document FROM origdatablocks WHERE dataset = ? ORDER BY rowid",
                (dataset_id,),
            ).fetchall()
        return [f for r in rows for f in json.loads(r[0])["dataFileList"]]

    def _dataset_id(self, conn: sqlite3.Connection, pid: str) -> int:
        row = conn.execute("SELECT id FROM datasets WHERE pid = ?", (pid,)).fetchone()
        if row is None:
            raise InputError(f"dataset {pid!r}: not in the catalogue {self.path}")
        return row[0]

    # --- writing -----------------------------------------------------------------------

    def _create(self, record: DatasetRecord) -> str:
        now = format_time(dt.datetime.now(dt.UTC))
        pid = f"{PID_PREFIX}/{uuid.uuid4()}"
        document = record.dataset.model_dump(mode="json", exclude_none=True)
        document.update(
            pid=pid,
            creationTime=format_time(parse_time(document["creationTime"])),
            scientificMetadata=add_si_values(document.get("scientificMetadata") or {}),
            size=record.datablock.size,
            numberOfFiles=len(record.datablock.dataFileList),
            createdAt=now,
            updatedAt=now,
        )
        datablock = record.datablock.model_dump(mode="json", exclude_none=True)
        datablock.update(
            id=str(uuid.uuid4()),
            datasetId=pid,
            ownerGroup=document["ownerGroup"],
            accessGroups=document.get("accessGroups", []),
            createdAt=now,
            updatedAt=now,
        )
        with self._connect() as conn, self._transaction(conn):
            existing = conn.execute(
                "SELECT pid FROM datasets WHERE content_key = ?", (record.content_key,)
            ).fetchone()
            if existing:  # another process ingested the same files since the lookup
                return existing[0]
            cursor = conn.execute(
                "INSERT INTO datasets (pid, content_key, type, dataset_name, owner_group,"
                " creation_time, size, number_of_files, document) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    pid,
                    record.content_key,
                    document["type"],
                    document.get("datasetName", ""),
                    document["ownerGroup"],
                    document["creationTime"],
                    document["size"],
                    document["numberOfFiles"],
                    json.dumps(document),
                ),
            )
            dataset_id = cursor.lastrowid
            assert dataset_id is not None  # an INSERT always sets it; narrows the Optional type
            conn.execute(
                "INSERT INTO origdatablocks (id, dataset, document) VALUES (?,?,?)",
                (datablock["id"], dataset_id, json.dumps(datablock)),
            )
            _index(conn, dataset_id, document)
        return pid

    def _update(self, pid: str, record: DatasetRecord) -> None:
        fields = updatable_fields(record)
        fields["scientificMetadata"] = add_si_values(fields.get("scientificMetadata", {}))
        with self._connect() as conn, self._transaction(conn):
            dataset_id = self._dataset_id(conn, pid)
            document = json.loads(
                conn.execute(
                    "SELECT document FROM datasets WHERE id = ?", (dataset_id,)
                ).fetchone()[0]
            )
            document.update(fields, updatedAt=format_time(dt.datetime.now(dt.UTC)))
            conn.execute(
                "UPDATE datasets SET dataset_name = ?, document = ? WHERE id = ?",
                (document.get("datasetName", ""), json.dumps(document), dataset_id),
            )
            _index(conn, dataset_id, document)


def _index(conn: sqlite3.Connection, dataset_id: int, document: dict) -> None:
    """(Re)build the keyword, metadata and full-text rows of one dataset."""
    for table in ("keywords", "metadata"):
        conn.execute(f"DELETE FROM {table} WHERE dataset = ?", (dataset_id,))
    conn.execute("DELETE FROM datasets_fts WHERE rowid = ?", (dataset_id,))
    keywords = list(dict.fromkeys(document.get("keywords") or []))
    conn.executemany(
        "INSERT INTO keywords (keyword, dataset) VALUES (?, ?)", [(k, dataset_id) for k in keywords]
    )
    rows = []
    for key, value, unit in metadata_leaves(document.get("scientificMetadata") or {}):
        num = text = value_si = unit_si = None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            num = float(value)
            if is_known_unit(unit):
                value_si, unit_si = to_si(value, unit)
        elif isinstance(value, str):
            text = value
        else:
            continue  # lists (shapes, spacings) are shown, not searched by value
        rows.append((dataset_id, key, num, text, value_si, unit_si))
    conn.executemany(
        "INSERT INTO metadata (dataset, key, num, text, value_si, unit_si) VALUES (?,?,?,?,?,?)",
        rows,
    )
    named = {"datasetName", "description", "keywords", "scientificMetadata"}
    conn.execute(
        "INSERT INTO datasets_fts (rowid, name, description, keywords, metadata, other)"
        " VALUES (?,?,?,?,?,?)",
        (
            dataset_id,
            document.get("datasetName", ""),
            document.get("description", ""),
            " ".join(keywords),
            " ".join(document_strings(document.get("scientificMetadata") or {})),
            " ".join(document_strings({k: v for k, v in document.items() if k not in named})),
        ),
    )


def _where(query: Query) -> tuple[list[str], list]:
    """SQL conditions (on ``datasets d``) and their parameters for a query."""
    where: list[str] = []
    params: list = []
    loose, phrases = query.text_terms()
    if phrases or loose:
        # Every word is quoted, so no user text is ever parsed as FTS syntax.
        if phrases:
            match = " AND ".join('"' + " ".join(p) + '"' for p in phrases)
        else:
            match = " OR ".join(f'"{w}"' for w in loose)
        where.append("d.id IN (SELECT rowid FROM datasets_fts WHERE datasets_fts MATCH ?)")
        params.append(match)
    # Conditions on the same key and column share one index range scan (a range
    # "voxel_size > a AND voxel_size < b" reads only the rows between a and b).
    groups: dict[tuple, list[tuple[str, object]]] = {}
    for condition in query.conditions:
        op = _OPERATORS[condition.relation]
        if condition.unit:
            value_si, unit_si = condition.value_si()
            groups.setdefault((condition.key, "value_si", unit_si), []).append((op, value_si))
        elif condition.numeric:
            groups.setdefault((condition.key, "num", None), []).append((op, condition.value))
        else:
            groups.setdefault((condition.key, "text", None), []).append((op, condition.value))
    for (key, column, unit_si), tests in groups.items():
        sql = "SELECT dataset FROM metadata WHERE key = ?"
        params.append(key)
        if unit_si is not None:
            sql += " AND unit_si = ?"
            params.append(unit_si)
        for op, value in tests:
            sql += f" AND {column} {op} ?"
            params.append(value)
        where.append(f"d.id IN ({sql})")
    if query.created_from is not None:
        where.append("d.creation_time >= ?")
        params.append(format_time(query.created_from))
    if query.created_to is not None:
        where.append("d.creation_time <= ?")
        params.append(format_time(query.created_to))
    if query.dataset_type:
        where.append("d.type = ?")
        params.append(query.dataset_type)
    if query.owner_groups:
        where.append(f"d.owner_group IN ({','.join('?' * len(query.owner_groups))})")
        params += list(query.owner_groups)
    for keyword in query.keywords:
        where.append("d.id IN (SELECT dataset FROM keywords WHERE keyword = ?)")
        params.append(keyword)
    return where, params
