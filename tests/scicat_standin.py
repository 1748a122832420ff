"""An in-memory HTTP stand-in for a SciCat server, for the catalogue tests.

SciCat itself cannot run here: its backend needs MongoDB, which no reachable package
registry ships. This stand-in serves the subset of the SciCat API that
``unified_framework.catalogue.scicat`` uses, following the backend's OpenAPI description
and its implementation (``scicat-backend-next``: ``datasets.controller.ts`` for v3,
``datasets.v4.controller.ts`` and ``origdatablocks.v4.controller.ts`` for v4,
``common/utils.ts`` for ``fullquery`` and the ``scientific`` conditions):

* ``POST /api/v3/auth/login`` -> ``{"access_token", "id", ...}``; every other endpoint
  answers 401 without a valid ``Authorization: Bearer`` token;
* v3: ``POST/GET/PATCH/DELETE datasets[/{pid}]``, ``GET datasets/fullquery``,
  ``GET datasets/fullfacet``, ``POST/GET datasets/{pid}/origdatablocks``;
* v4: ``POST/GET/PATCH/DELETE datasets[/{pid}]``, ``GET datasets?filter=``,
  ``GET datasets/count``, ``POST/GET origdatablocks``.

Like SciCat it adds ``valueSI``/``unitSI`` to scientific metadata on create and patch,
merges ``scientific`` conditions of one ``fullquery`` into one object (so a second
condition on the same key replaces the first, as in SciCat), validates v3 and v4 dataset
bodies differently, and evaluates the MongoDB filters (``$and``, ``$or``, ``$text``,
``$eq``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$all``) on the stored documents.
SI conversion uses the framework's unit table; the real server uses mathjs.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import re
import secrets
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from unified_framework.catalogue.units import to_si
from unified_framework.errors import InputError

_V3_ONLY = ("principalInvestigator", "investigator", "proposalId", "sampleId", "instrumentId")
_COMMON_REQUIRED = ("owner", "contactEmail", "sourceFolder", "creationTime", "type", "ownerGroup")
_V3_REQUIRED = {
    "raw": _COMMON_REQUIRED + ("creationLocation", "principalInvestigator"),
    "derived": _COMMON_REQUIRED + ("investigator", "inputDatasets", "usedSoftware"),
}
_V4_REQUIRED = _COMMON_REQUIRED + ("datasetName",)
_STRING_FIELDS = ("type", "ownerGroup", "creationLocation", "owner", "datasetName")
_WORD = re.compile(r"[^\W_]+")


class HTTPError(Exception):
    def __init__(self, status: int, message: Any) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SciCatStandIn:
    """A threaded SciCat API stand-in on 127.0.0.1 with an ephemeral port.

    Parameters
    ----------
    username, password : str
        The one account accepted by ``auth/login``.
    """

    def __init__(self, username: str = "ingestor", password: str = "s3cret-pw") -> None:
        self.username, self.password = username, password
        self.datasets: dict[str, dict] = {}
        self.origdatablocks: list[dict] = []
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.refuse_origdatablocks = False  # answer 500 to new origdatablocks (failure tests)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def issue_token(self) -> str:
        """A valid access token, as an administrator would hand out."""
        token = secrets.token_hex(24)
        self.tokens.add(token)
        return token

    def url(self, version: int) -> str:
        """API base URL, e.g. ``http://127.0.0.1:PORT/api/v3``."""
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v{version}"

    def start(self) -> SciCatStandIn:
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                standin.requests.append((method, parts.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                    query = {k: json.loads(v[0]) for k, v in parse_qs(parts.query).items()}
                    with standin._lock:
                        status, answer = standin._route(
                            method, parts.path, query, body, self.headers
                        )
                except HTTPError as exc:
                    status, answer = exc.status, {"statusCode": exc.status, "message": exc.message}
                except json.JSONDecodeError as exc:
                    status, answer = 400, {"statusCode": 400, "message": f"invalid JSON: {exc}"}
                except Exception as exc:  # a bug in the stand-in: answer like a server would
                    status, answer = 500, {"statusCode": 500, "message": repr(exc)}
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- routing -----------------------------------------------------------------------

    def _route(
        self, method: str, path: str, query: dict, body: Any, headers: Any
    ) -> tuple[int, Any]:
        match = re.fullmatch(r"/api/v([34])/(.*)", path)
        if not match:
            raise HTTPError(404, f"Cannot {method} {path}")
        version, rest = int(match.group(1)), match.group(2)
        segments = [unquote(s) for s in rest.split("/")]
        if version == 3 and segments == ["auth", "login"] and method == "POST":
            return self._login(body or {})
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise HTTPError(401, "Unauthorized")
        if segments[0] == "datasets":
            return self._datasets(version, method, segments[1:], query, body)
        if version == 4 and segments == ["origdatablocks"]:
            if method == "POST":
                return 201, self._add_origdatablock(
                    body or {}, body.get("datasetId") if body else None
                )
            if method == "GET":
                where = query.get("filter", {}).get("where", {})
                return 200, [b for b in self.origdatablocks if _matches(b, where)]
        raise HTTPError(404, f"Cannot {method} {path}")

    def _login(self, body: dict) -> tuple[int, Any]:
        if body.get("username") != self.username or body.get("password") != self.password:
            raise HTTPError(401, "Unauthorized")
        token = self.issue_token()
        return 201, {
            "access_token": token,
            "id": token,
            "expires_in": 3600,
            "ttl": 3600,
            "userId": self.username,
            "user": {"username": self.username},
        }

    def _datasets(
        self, version: int, method: str, segments: list[str], query: dict, body: Any
    ) -> tuple[int, Any]:
        if not segments and method == "POST":
            return (200 if version == 3 else 201), self._create_dataset(version, body or {})
        if not segments and method == "GET" and version == 4:
            flt = query.get("filter", {})
            limits = flt.get("limits", {})
            sort = limits.get("sort") or {"createdAt": "desc"}
            return 200, self._find(
                flt.get("where", {}), limits.get("skip", 0), limits.get("limit", 10), sort
            )
        if segments == ["count"] and method == "GET" and version == 4:
            where = query.get("filter", {}).get("where", {})
            return 200, {"count": sum(_matches(d, where) for d in self.datasets.values())}
        if segments == ["fullquery"] and method == "GET" and version == 3:
            where = _fullquery_filter(query.get("fields", {}))
            limits = query.get("limits", {})
            field, _, direction = (limits.get("order") or "").partition(":")
            sort = {field: direction or "asc"} if field else {}
            return 200, self._find(where, limits.get("skip", 0), limits.get("limit") or 100, sort)
        if segments == ["fullfacet"] and method == "GET" and version == 3:
            where = _fullquery_filter(query.get("fields", {}))
            total = sum(_matches(d, where) for d in self.datasets.values())
            return 200, [{"all": [{"totalSets": total}] if total else []}]
        if len(segments) == 1:
            pid = segments[0]
            dataset = self.datasets.get(pid)
            if dataset is None and (version == 4 or method in ("PATCH", "DELETE")):
                raise HTTPError(404, f"Dataset #{pid} not found")
            if method == "GET":
                return 200, dataset  # v3 answers an empty body for an unknown pid
            if method == "PATCH":
                return 200, self._patch_dataset(dataset, body or {})
            if method == "DELETE":
                if dataset is None:
                    raise HTTPError(404, f"Dataset #{pid} not found")
                self.origdatablocks = [b for b in self.origdatablocks if b["datasetId"] != pid]
                return 200, self.datasets.pop(pid)
        if len(segments) == 2 and segments[1] == "origdatablocks" and version == 3:
            if segments[0] not in self.datasets:
                raise HTTPError(404, f"Dataset #{segments[0]} not found")
            if method == "POST":
                return 201, self._add_origdatablock(body or {}, segments[0])
            if method == "GET":
                return 200, [b for b in self.origdatablocks if b["datasetId"] == segments[0]]
        raise HTTPError(404, f"Cannot {method} /datasets/{'/'.join(segments)}")

    # --- storage -----------------------------------------------------------------------

    def _create_dataset(self, version: int, body: dict) -> dict:
        kind = body.get("type")
        if version == 3:
            if kind not in _V3_REQUIRED:
                raise HTTPError(400, ["type must be one of raw, derived"])
            missing = [f for f in _V3_REQUIRED[kind] if f not in body]
        else:
            missing = [f for f in _V4_REQUIRED if f not in body]
            forbidden = [f for f in _V3_ONLY if f in body]
            if forbidden:
                raise HTTPError(400, [f"property {f} should not exist" for f in forbidden])
        if missing:
            raise HTTPError(400, [f"{f} should not be empty" for f in missing])
        pid = body.get("pid") or f"20.500.12269/{uuid.uuid4()}"
        if pid in self.datasets:
            raise HTTPError(409, "A dataset with this unique key already exists!")
        now = _utc_text(dt.datetime.now(dt.UTC))
        dataset = {
            **body,
            "pid": pid,
            "creationTime": _utc_text(_parse_time(body["creationTime"])),
            "scientificMetadata": _with_si(body.get("scientificMetadata") or {}),
            "createdBy": self.username,
            "updatedBy": self.username,
            "createdAt": now,
            "updatedAt": now,
            "version": f"v{version}",
        }
        self.datasets[pid] = dataset
        return dataset

    def _patch_dataset(self, dataset: dict, body: dict) -> dict:
        update = dict(body)
        if "scientificMetadata" in update:
            update["scientificMetadata"] = _with_si(update["scientificMetadata"])
        dataset.update(update, updatedAt=_utc_text(dt.datetime.now(dt.UTC)))
        return dataset

    def _add_origdatablock(self, body: dict, pid: str | None) -> dict:
        if self.refuse_origdatablocks:
            raise HTTPError(500, "Something went wrong. Please try again later.")
        if pid not in self.datasets:
            raise HTTPError(404, f"Dataset: {pid} not found for attaching an origdatablock")
        if not isinstance(body.get("dataFileList"), list) or "size" not in body:
            raise HTTPError(400, ["size and dataFileList are required"])
        dataset = self.datasets[pid]
        block = {
            **body,
            "_id": str(uuid.uuid4()),
            "datasetId": pid,
            "ownerGroup": dataset["ownerGroup"],
        }
        self.origdatablocks.append(block)
        # as the backend does after adding a datablock
        blocks = [b for b in self.origdatablocks if b["datasetId"] == pid]
        dataset["size"] = sum(b["size"] for b in blocks)
        dataset["numberOfFiles"] = sum(len(b["dataFileList"]) for b in blocks)
        return block

    def _find(self, where: dict, skip: int, limit: int, sort: dict) -> list[dict]:
        found = [d for d in self.datasets.values() if _matches(d, where)]
        for field, direction in reversed(list(sort.items())):
            present = [d for d in found if field in d]
            absent = [d for d in found if field not in d]
            present.sort(key=lambda d: d[field], reverse=str(direction).lower() in ("desc", "-1"))
            found = present + absent
        return found[skip : skip + limit]


# --- MongoDB semantics ----------------------------------------------------------------


def _utc_text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise HTTPError(400, ["creationTime must be a valid ISO 8601 date string"]) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _with_si(metadata: dict) -> dict:
    """SciCat's appendSIUnitToPhysicalQuantity: add valueSI/unitSI where a unit is given."""
    out = {}
    for key, value in metadata.items():
        if isinstance(value, dict) and "value" in value and value.get("unit"):
            leaf = dict(value)
            if isinstance(leaf["value"], (int, float)) and not isinstance(leaf["value"], bool):
                try:
                    leaf["valueSI"], leaf["unitSI"] = to_si(leaf["value"], leaf["unit"])
                except InputError:  # SciCat keeps value and unit when mathjs cannot convert
                    leaf["valueSI"], leaf["unitSI"] = leaf["value"], leaf["unit"]
            out[key] = leaf
        elif isinstance(value, dict) and "value" not in value:
            out[key] = _with_si(value)
        else:
            out[key] = value
    return out


def _fullquery_filter(fields: dict) -> dict:
    """SciCat's createFullqueryFilter for the dataset collection."""
    where: dict = {}
    for key, value in fields.items():
        if key == "mode":
            where.update(value)
        elif key == "text":
            where["$text"] = {"$search": value}
        elif key in ("scientific", "sampleCharacteristics"):
            where.update(_map_scientific(value))
        elif key == "creationTime":
            where[key] = {"$gte": value["begin"], "$lte": value["end"]}
        elif key in _STRING_FIELDS:
            if isinstance(value, list):
                where[key] = value[0] if len(value) == 1 else {"$in": value}
            else:
                where[key] = value
        elif isinstance(value, list):
            where[key] = {"$in": value}
        else:
            where[key] = value
    return where


def _map_scientific(conditions: list[dict]) -> dict:
    """SciCat's mapScientificQuery (including its merging of conditions into one object)."""
    query: dict = {}
    operators = {"EQUAL_TO_NUMERIC": "$eq", "GREATER_THAN": "$gt", "LESS_THAN": "$lt"}
    for condition in conditions:
        lhs, relation, rhs, unit = (condition.get(k) for k in ("lhs", "relation", "rhs", "unit"))
        key = f"scientificMetadata.{lhs}"
        if relation == "EQUAL_TO_STRING":
            query[f"{key}.value"] = {"$eq": rhs}
        elif relation in operators:
            if unit:
                value_si, unit_si = to_si(float(rhs), unit)
                query[f"{key}.valueSI"] = {operators[relation]: value_si}
                query[f"{key}.unitSI"] = {"$eq": unit_si}
            else:
                query[f"{key}.value"] = {operators[relation]: rhs}
    return query


def _values_at(document: Any, path: str) -> list:
    """Candidate values at a dotted path; arrays match element-wise, as in MongoDB."""
    values = [document]
    for part in path.split("."):
        found = []
        for value in values:
            if isinstance(value, dict) and part in value:
                found.append(value[part])
            elif isinstance(value, list):
                found.extend(v[part] for v in value if isinstance(v, dict) and part in v)
        values = found
    expanded = []
    for value in values:
        expanded.append(value)
        if isinstance(value, list):
            expanded.extend(value)
    return expanded


def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both as numbers, datetimes or strings; None across types (MongoDB type brackets)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if type(a) is type(b) else None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        iso = r"\d{4}-\d{2}-\d{2}T"
        if re.match(iso, a) and re.match(iso, b):
            return _parse_time(a), _parse_time(b)
        return a, b
    return None


def _compare(values: list, op: str, operand: Any) -> bool:
    if op == "$eq":
        return any((pair := _comparable(v, operand)) and pair[0] == pair[1] for v in values)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        tests = {
            "$gt": lambda a, b: a > b,
            "$gte": lambda a, b: a >= b,
            "$lt": lambda a, b: a < b,
            "$lte": lambda a, b: a <= b,
        }
        return any((pair := _comparable(v, operand)) and tests[op](*pair) for v in values)
    if op == "$in":
        return any(_compare(values, "$eq", item) for item in operand)
    if op == "$all":
        return all(_compare(values, "$eq", item) for item in operand)
    raise HTTPError(400, f"unsupported operator {op}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _text_match(document: dict, search: str) -> bool:
    """MongoDB $text on a wildcard text index (no stemming, no stop words here)."""
    words = [w.lower() for s in _strings(document) for w in _WORD.findall(s)]
    phrases = re.findall(r'"([^"]*)"', search)
    if phrases:
        text = " " + " ".join(words) + " "
        return all(
            " " + " ".join(w.lower() for w in _WORD.findall(p)) + " " in text for p in phrases
        )
    terms = {w.lower() for w in _WORD.findall(search)}
    return bool(terms & set(words))


def _matches(document: dict, where: dict) -> bool:
    for key, condition in where.items():
        if key == "$and":
            ok = all(_matches(document, c) for c in condition)
        elif key == "$or":
            ok = any(_matches(document, c) for c in condition)
        elif key == "$text":
            ok = _text_match(document, condition["$search"])
        else:
            values = _values_at(document, key)
            if (
                isinstance(condition, dict)
                and condition
                and all(k.startswith("$") for k in condition)
            ):
                ok = all(_compare(values, op, operand) for op, operand in condition.items())
            else:
                ok = _compare(values, "$eq", condition)
        if not ok:
            return False
    return True
