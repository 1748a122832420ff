"""What a catalogue search asks for (:class:`Query`) and what it answers (:class:`SearchPage`).

Both backends (SciCat and the embedded SQLite catalogue) take the same :class:`Query`.
Its semantics mirror SciCat's ``datasets/fullquery``:

* ``text``: words are OR-ed (a dataset matching any word is found); if the text holds
  ``"quoted phrases"``, every phrase must occur and the loose words are ignored
  (MongoDB ``$text`` rules, which SciCat uses).
* ``conditions``: scientific-metadata conditions, all of which must hold. With a unit,
  values are compared in SI (``voxel_size > 0.5 um`` matches ``0.7 um`` and ``700 nm``);
  without one, the stored value is compared as given (``dicom.Rows = 128``,
  ``dicom.Modality = CT``).
* ``created_from``/``created_to``: inclusive range on ``creationTime``.
* ``dataset_type``, ``owner_groups`` (any of), ``keywords`` (all of).

Every query is bounded (:data:`MAX_TEXT_CHARS`, :data:`MAX_TERMS`, :data:`MAX_SKIP`,
:data:`MAX_LIMIT`), so that no request, from the CLI, the dashboard or the Python API,
can hold a backend for long: unbounded free text made one SQLite full-text search run
for 18 s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from ..errors import InputError
from .units import is_quantity, parse_quantity, to_si

#: Relations understood in conditions, as in SciCat (EQUAL_TO_*, GREATER_THAN, LESS_THAN).
RELATIONS = ("=", ">", "<")
#: Dataset fields a search can be sorted by.
SORT_FIELDS = ("creationTime", "datasetName", "size", "numberOfFiles")
DATASET_TYPES = ("raw", "derived")
#: Most results one page may hold.
MAX_LIMIT = 1000
#: Longest free text of a query, in characters.
MAX_TEXT_CHARS = 500
#: Most words in the free text (loose and in phrases together), and most conditions,
#: owner groups and keywords: each word or condition is one more index lookup.
MAX_TERMS = 32
#: Most results a query may skip (paging): fits every backend's integer type
#: (SQLite's OFFSET, MongoDB's skip), which a huge ``--page`` overflowed.
MAX_SKIP = 2**31 - 1

# Metadata keys become MongoDB paths and SQL parameters: letters, digits, _ - and dots.
_KEY = re.compile(r"^[^\W][\w\-]*(\.[\w\-]+)*$")
_CONDITION = re.compile(r"^\s*([^=<>\s]+)\s*(==|=|>|<)\s*(.*?)\s*$")
_WORD = re.compile(r"[^\W_]+")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One scientific-metadata condition, e.g. ``Condition("voxel_size", ">", 0.5, "um")``.

    Parameters
    ----------
    key : str
        Metadata key; nested entries are joined with dots (``dicom.Modality``).
    relation : {"=", ">", "<"}
    value : float or str
        Numbers for ``>``/``<`` and numeric equality; strings for string equality.
    unit : str
        Unit of ``value`` (see :data:`~unified_framework.catalogue.units.KNOWN_UNITS`);
        empty to compare the stored value as it is.
    """

    key: str
    relation: str
    value: float | str
    unit: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise InputError(
                f"condition key {self.key!r}: expected letters, digits, '_', '-' joined by dots"
            )
        if self.relation not in RELATIONS:
            raise InputError(f"condition relation {self.relation!r}: expected one of = > <")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, str)):
            raise InputError(f"condition {self.key}: value must be a number or a string")
        if isinstance(self.value, int):
            object.__setattr__(self, "value", float(self.value))
        if self.relation != "=" and not self.numeric:
            raise InputError(
                f"condition {self.key}{self.relation}: needs a number, got {self.value!r}"
            )
        if self.unit:
            if not self.numeric:
                raise InputError(f"condition {self.key}: a unit needs a numeric value")
            to_si(0.0, self.unit)  # validates the unit

    @property
    def numeric(self) -> bool:
        """True if the value is a number (numeric comparison)."""
        return isinstance(self.value, float)

    def value_si(self) -> tuple[float, str]:
        """The value converted to SI with its SI unit (only for conditions with a unit)."""
        return to_si(float(self.value), self.unit)

    def __str__(self) -> str:
        value = f"{self.value:g}" if self.numeric else f'"{self.value}"'
        return f"{self.key}{self.relation}{value}{' ' + self.unit if self.unit else ''}"


def parse_condition(text: str) -> Condition:
    """Parse ``'voxel_size>0.5 um'``, ``'dicom.Rows=128'`` or ``'dicom.Modality=CT'``.

    A value that is a number, optionally followed by a known unit, is numeric; for ``=``
    anything else (or anything in quotes) is a string.

    Raises
    ------
    InputError
        If the text is not ``KEY RELATION VALUE``.
    """
    if re.search(r"[<>]=|=[<>]|!=", text):
        raise InputError(
            f"condition {text!r}: use =, > or <; SciCat compares metadata with these three only"
        )
    match = _CONDITION.match(text)
    if not match or not match.group(3):
        raise InputError(
            f"condition {text!r}: expected KEY=VALUE, KEY>NUMBER [UNIT] or KEY<NUMBER [UNIT]"
        )
    key, relation, raw = match.groups()
    relation = "=" if relation == "==" else relation
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return Condition(key, relation, raw[1:-1])
    if is_quantity(raw):
        value, unit = parse_quantity(raw)
        return Condition(key, relation, value, unit)
    if relation == "=":
        return Condition(key, relation, raw)
    parse_quantity(raw)  # raises the message naming the bad number or unit
    raise AssertionError("unreachable")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class Query:
    """A catalogue search; every field is optional (the empty query lists everything).

    Parameters
    ----------
    text : str
        Free text (see the module docstring for its rules); at most
        :data:`MAX_TEXT_CHARS` characters and :data:`MAX_TERMS` words.
    conditions : tuple of Condition
        At most :data:`MAX_TERMS` (as ``owner_groups`` and ``keywords``).
    created_from, created_to : datetime, optional
        Inclusive bounds on the dataset's ``creationTime``; naive datetimes are UTC.
    dataset_type : {"raw", "derived"}, optional
    owner_groups : tuple of str
        Match datasets owned by any of these groups.
    keywords : tuple of str
        Match datasets carrying all of these keywords.
    skip, limit : int
        Paging: ``limit`` results after skipping ``skip`` (``limit`` at most
        :data:`MAX_LIMIT`, ``skip`` at most :data:`MAX_SKIP`).
    sort : str
        One of :data:`SORT_FIELDS`.
    descending : bool
    """

    text: str = ""
    conditions: tuple[Condition, ...] = ()
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    dataset_type: str | None = None
    owner_groups: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    skip: int = 0
    limit: int = 25
    sort: str = "creationTime"
    descending: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InputError(f"search text: expected a string, got {type(self.text).__name__}")
        if len(self.text) > MAX_TEXT_CHARS:
            raise InputError(
                f"search text: {len(self.text)} characters; expected at most {MAX_TEXT_CHARS}"
            )
        loose, phrases = self.text_terms()
        if (words := len(loose) + sum(map(len, phrases))) > MAX_TERMS:
            raise InputError(f"search text: {words} words; expected at most {MAX_TERMS}")
        for name in ("conditions", "owner_groups", "keywords"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if len(getattr(self, name)) > MAX_TERMS:
                raise InputError(
                    f"query {name}: {len(getattr(self, name))} given; expected at most {MAX_TERMS}"
                )
        if not all(isinstance(c, Condition) for c in self.conditions):
            raise InputError("query conditions: expected Condition objects")
        if self.dataset_type not in (None, *DATASET_TYPES):
            raise InputError(f"dataset type {self.dataset_type!r}: expected raw or derived")
        if self.sort not in SORT_FIELDS:
            raise InputError(f"sort field {self.sort!r}: expected one of {', '.join(SORT_FIELDS)}")
        if not (isinstance(self.skip, int) and 0 <= self.skip <= MAX_SKIP):
            raise InputError(f"skip {self.skip!r}: expected an integer from 0 to {MAX_SKIP}")
        if not (isinstance(self.limit, int) and 1 <= self.limit <= MAX_LIMIT):
            raise InputError(f"limit {self.limit!r}: expected an integer from 1 to {MAX_LIMIT}")
        for name in ("created_from", "created_to"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, dt.datetime):
                    raise InputError(f"{name}: expected a datetime, got {value!r}")
                object.__setattr__(self, name, as_utc(value))

    def text_terms(self) -> tuple[list[str], list[list[str]]]:
        """Split :attr:`text` into loose words and quoted phrases (each a word list), lower case."""
        phrases = [_words(p) for p in re.findall(r'"([^"]*)"', self.text)]
        loose = _words(re.sub(r'"[^"]*"', " ", self.text))  # a stray quote is ignored
        return loose, [p for p in phrases if p]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@dataclasses.dataclass
class SearchPage:
    """One page of search results.

    Attributes
    ----------
    datasets : list of dict
        SciCat dataset documents (``pid``, ``datasetName``, ``type``, ``creationTime``,
        ``scientificMetadata``, ...), identical in shape for both backends.
    total : int
        Number of datasets matching the query (all pages).
    skip, limit : int
        The paging of this page.
    """

    datasets: list[dict]
    total: int
    skip: int
    limit: int

    @property
    def has_more(self) -> bool:
        """True if more results follow this page."""
        return self.skip + len(self.datasets) < self.total


def as_utc(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def format_time(value: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as SciCat returns it: ``2024-05-01T12:00:00.000Z``."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, *, end_of_day: bool = False) -> dt.datetime:
    """Parse ``2024-05-01`` or an ISO datetime (``Z`` allowed) into an aware UTC datetime.

    Parameters
    ----------
    text : str
    end_of_day : bool
        For a bare date, return its last millisecond instead of midnight (inclusive
        upper bounds: ``--to 2024-05-01`` includes that day).
    """
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = dt.datetime.fromisoformat(text.strip())
            if end_of_day:
                day += dt.timedelta(days=1, milliseconds=-1)
            return as_utc(day)
        return as_utc(dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError:
        raise InputError(f"date {text!r}: expected YYYY-MM-DD or an ISO 8601 date-time") from None
