"""Catalogue on a SciCat server, through its REST API (v3 or v4).

Datasets are built with pyscicat's models; requests go through a ``requests.Session``
here rather than pyscicat's client because pyscicat also sends the token as an
``access_token`` URL parameter, which ``urllib3`` logs at DEBUG level. Here the token only
ever travels in the ``Authorization`` header and is never logged or shown in ``repr``.

Endpoints used (paths relative to the API URL, e.g. ``https://scicat.example.org/api/v3``):

* login: ``POST auth/login`` (v4 servers: ``/api/v3/auth/login``, it is not versioned);
* create, read, update: ``POST datasets``, ``GET``/``PATCH datasets/{pid}``; ``DELETE
  datasets/{pid}`` undoes a create whose file list was refused;
* files: v3 ``POST``/``GET datasets/{pid}/origdatablocks``; v4 ``POST``/``GET origdatablocks``;
* search: v3 ``GET datasets/fullquery`` with the total from ``GET datasets/fullfacet``;
  v4 ``GET datasets?filter=`` with the total from ``GET datasets/count?filter=``.

Search conditions follow SciCat's ``fullquery`` ``scientific`` semantics
(``lhs``/``relation``/``rhs``/``unit``): with a unit the server compares ``valueSI`` and
``unitSI``; for v4 the same comparison is written as a MongoDB filter here.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

from ..errors import BackendUnavailable, InputError, MDLMAError
from .base import Catalogue, updatable_fields
from .extract import DatasetRecord
from .query import Condition, Query, SearchPage, format_time

logger = logging.getLogger(__name__)

_RELATIONS = {">": "GREATER_THAN", "<": "LESS_THAN"}
_MONGO = {"=": "$eq", ">": "$gt", "<": "$lt"}
# v3 (pyscicat) dataset fields that v4 renamed to lists.
_V4_RENAMED = {
    "principalInvestigator": "principalInvestigators",
    "investigator": "principalInvestigators",
    "proposalId": "proposalIds",
    "sampleId": "sampleIds",
    "instrumentId": "instrumentIds",
}
# fullquery needs both ends of a date range.
_EARLIEST, _LATEST = "1970-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z"


class SciCatCatalogue(Catalogue):
    """Catalogue on a SciCat server.

    Parameters
    ----------
    url : str
        API base URL ending in ``/api/v3`` or ``/api/v4``.
    token : str, optional
        A SciCat access token (JWT). Either this or ``username`` and ``password``.
    username, password : str, optional
        Credentials of a local or functional account, exchanged for a token.
    api_version : {3, 4}, optional
        Defaults to the version in ``url`` (3 if the URL does not say).
    timeout : float
        Seconds to wait for each request.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        api_version: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        import requests

        self.url = url.rstrip("/")
        match = re.search(r"/v(\d+)$", self.url)
        self.api_version = int(api_version or (match.group(1) if match else 3))
        if self.api_version not in (3, 4):
            raise InputError(
                f"scicat url {url!r}: API version {self.api_version} unsupported; expected 3 or 4"
            )
        self._timeout = timeout
        self._session = requests.Session()
        if not token:
            if not (username and password):
                raise InputError(
                    "scicat: no credentials; set MDLMA_SCICAT_TOKEN, or MDLMA_SCICAT_USERNAME"
                    " and MDLMA_SCICAT_PASSWORD, or [scicat] token in the configuration"
                )
            token = self._login(username, password)
        self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"SciCatCatalogue({self.url!r}, api_version={self.api_version})"

    def _login(self, username: str, password: str) -> str:
        # The auth controller is not versioned: v4 deployments serve it under /api/v3.
        login_url = re.sub(r"/v4$", "/v3", self.url) + "/auth/login"
        response = self._send("POST", login_url, json={"username": username, "password": password})
        if not response.ok:
            raise InputError(
                f"scicat {self.url}: login as {username!r} failed (HTTP {response.status_code})"
            )
        body = response.json()
        token = body.get("access_token") or body.get("id")
        if not token:
            raise InputError(f"scicat {self.url}: login answer holds no access token")
        return token

    def _send(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        logger.debug("SciCat %s %s", method, url)
        try:
            return self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise BackendUnavailable(
                f"scicat {self.url}: unreachable ({type(exc).__name__})"
            ) from None

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict | None = None,
        body: Any = None,
        missing: str | None = None,
    ) -> Any:
        """Send a request and return the decoded JSON answer.

        ``missing`` names the object for the error raised on HTTP 404 (or an empty answer).
        """
        params = {k: json.dumps(v) for k, v in (params or {}).items()}
        response = self._send(method, f"{self.url}/{endpoint}", params=params, json=body)
        if response.status_code in (401, 403):
            raise InputError(
                f"scicat {self.url}: not authorised (HTTP {response.status_code}); check the token or credentials"
            )
        if response.status_code == 404 and missing:
            raise InputError(f"{missing}: not in the catalogue {self.url}")
        if not response.ok:
            raise InputError(
                f"scicat {endpoint}: HTTP {response.status_code}: {response.text[:300]}"
            )
        result = response.json() if response.content else None
        if result is None and missing:
            raise InputError(f"{missing}: not in the catalogue {self.url}")
        return result

    # --- reading -----------------------------------------------------------------------

    def get(self, pid: str) -> dict:
        return self._call("GET", f"datasets/{_quote(pid)}", missing=f"dataset {pid!r}")

    def files(self, pid: str) -> list[dict]:
        if self.api_version == 3:
            blocks = self._call(
                "GET", f"datasets/{_quote(pid)}/origdatablocks", missing=f"dataset {pid!r}"
            )
        else:
            self.get(pid)  # raises for an unknown pid, as v3 does
            blocks = self._call(
                "GET", "origdatablocks", params={"filter": {"where": {"datasetId": pid}}}
            )
        return [f for block in blocks or [] for f in block.get("dataFileList", [])]

    def search(self, query: Query) -> SearchPage:
        direction = "desc" if query.descending else "asc"
        if self.api_version == 3:
            fields = _fullquery_fields(query)
            limits = {
                "skip": query.skip,
                "limit": query.limit,
                "order": f"{query.sort}:{direction}",
            }
            datasets = self._call(
                "GET", "datasets/fullquery", params={"fields": fields, "limits": limits}
            )
            facets = self._call(
                "GET", "datasets/fullfacet", params={"fields": fields, "facets": []}
            )
            counts = (facets or [{}])[0].get("all") or [{}]
            total = int(counts[0].get("totalSets", 0))
        else:
            where = _mongo_where(query)
            limits = {"skip": query.skip, "limit": query.limit, "sort": {query.sort: direction}}
            datasets = self._call(
                "GET", "datasets", params={"filter": {"where": where, "limits": limits}}
            )
            total = int(
                self._call("GET", "datasets/count", params={"filter": {"where": where}})["count"]
            )
        return SearchPage(list(datasets or []), total, query.skip, query.limit)

    # --- writing -----------------------------------------------------------------------

    def _create(self, record: DatasetRecord) -> str:
        body = record.dataset.model_dump(mode="json", exclude_none=True)
        if self.api_version == 4:
            body = _to_v4(body)
        pid = self._call("POST", "datasets", body=body)["pid"]
        block = record.datablock.model_dump(mode="json", exclude_none=True)
        try:
            if self.api_version == 3:
                self._call("POST", f"datasets/{_quote(pid)}/origdatablocks", body=block)
            else:
                block.update(
                    datasetId=pid,
                    ownerGroup=body["ownerGroup"],
                    accessGroups=body.get("accessGroups", []),
                )
                self._call("POST", "origdatablocks", body=block)
        except MDLMAError:
            # No dataset without its files: a re-run would take it for complete.
            self._call("DELETE", f"datasets/{_quote(pid)}")
            raise
        return pid

    def _update(self, pid: str, record: DatasetRecord) -> None:
        self._call(
            "PATCH",
            f"datasets/{_quote(pid)}",
            body=updatable_fields(record),
            missing=f"dataset {pid!r}",
        )


def _quote(pid: str) -> str:
    """PIDs contain '/' (``20.500.12269/...``): escape it inside the URL path."""
    return quote(pid, safe="")


def _to_v4(body: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _V4_RENAMED:
            out.setdefault(_V4_RENAMED[key], []).append(value)
        else:
            out[key] = value
    return out


def _text(query: Query) -> str:
    """The query's text as MongoDB ``$text`` reads it, normalised as the SQLite backend
    reads it (so both backends find the same datasets)."""
    loose, phrases = query.text_terms()
    if phrases:
        return " ".join(f'"{" ".join(p)}"' for p in phrases)
    return " ".join(loose)


def _scientific(condition: Condition) -> dict:
    """A fullquery ``scientific`` condition (SciCat's ``IScientificFilter``)."""
    if condition.relation == "=":
        relation = "EQUAL_TO_NUMERIC" if condition.numeric else "EQUAL_TO_STRING"
    else:
        relation = _RELATIONS[condition.relation]
    return {
        "lhs": condition.key,
        "relation": relation,
        "rhs": condition.value,
        "unit": condition.unit,
    }


def _condition_filter(condition: Condition) -> dict:
    """The MongoDB filter SciCat derives from a scientific condition."""
    path = f"scientificMetadata.{condition.key}"
    op = _MONGO[condition.relation]
    if condition.unit:
        value_si, unit_si = condition.value_si()
        return {f"{path}.valueSI": {op: value_si}, f"{path}.unitSI": {"$eq": unit_si}}
    return {f"{path}.value": {op: condition.value}}


def _fullquery_fields(query: Query) -> dict:
    """``fields`` of ``GET datasets/fullquery`` (and ``fullfacet``) for a v3 server."""
    fields: dict[str, Any] = {}
    extra: list[dict] = []  # conditions fullquery cannot express, passed as raw "mode"
    if text := _text(query):
        fields["text"] = text
    scientific, seen = [], set()
    for condition in query.conditions:
        # SciCat merges scientific conditions into one object, so a second condition on
        # the same key (a range) would overwrite the first: send it as MongoDB instead.
        if condition.key in seen:
            extra.append(_condition_filter(condition))
        else:
            scientific.append(_scientific(condition))
            seen.add(condition.key)
    if scientific:
        fields["scientific"] = scientific
    if query.created_from or query.created_to:
        fields["creationTime"] = {
            "begin": format_time(query.created_from) if query.created_from else _EARLIEST,
            "end": format_time(query.created_to) if query.created_to else _LATEST,
        }
    if query.dataset_type:
        fields["type"] = query.dataset_type
    if query.owner_groups:
        fields["ownerGroup"] = list(query.owner_groups)
    if query.keywords:  # fullquery's "keywords" means any-of; the Query means all-of
        extra.append({"keywords": {"$all": list(query.keywords)}})
    if extra:
        fields["mode"] = {"$and": extra}
    return fields


def _mongo_where(query: Query) -> dict:
    """``where`` of ``GET datasets?filter=`` for a v4 server."""
    clauses: list[dict] = []
    if text := _text(query):
        clauses.append({"$text": {"$search": text}})
    clauses += [_condition_filter(c) for c in query.conditions]
    if query.created_from or query.created_to:
        bounds = {}
        if query.created_from:
            bounds["$gte"] = format_time(query.created_from)
        if query.created_to:
            bounds["$lte"] = format_time(query.created_to)
        clauses.append({"creationTime": bounds})
    if query.dataset_type:
        clauses.append({"type": query.dataset_type})
    if query.owner_groups:
        clauses.append({"ownerGroup": {"$in": list(query.owner_groups)}})
    if query.keywords:
        clauses.append({"keywords": {"$all": list(query.keywords)}})
    text_clauses = [c for c in clauses if "$text" in c]
    rest = [c for c in clauses if "$text" not in c]
    # MongoDB allows $text only at the top level of the filter.
    where: dict[str, Any] = dict(text_clauses[0]) if text_clauses else {}
    if rest:
        where["$and"] = rest
    return where
