"""Units, search conditions and query validation of the catalogue."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from unified_framework.catalogue import (
    MAX_SKIP,
    MAX_TERMS,
    MAX_TEXT_CHARS,
    Condition,
    Query,
    SQLiteCatalogue,
    parse_condition,
    parse_time,
    to_si,
)
from unified_framework.catalogue.units import is_known_unit, parse_quantity
from unified_framework.errors import InputError
from unified_framework.io._common import to_micrometres


@pytest.mark.parametrize(
    "value, unit, expected",
    [
        (0.5, "um", (5e-7, "m")),
        (500, "nm", (5e-7, "m")),
        (0.0005, "mm", (5e-7, "m")),
        (2, "\u00b5m", (2e-6, "m")),
        (250, "ms", (0.25, "s")),
        (2, "min", (120.0, "s")),
        (25, "keV", (25 * 1.602176634e-16, "J")),
        (180, "deg", (3.14159265359, "rad")),
        (2, "GiB", (2 * 1024.0**3, "B")),
    ],
)
def test_to_si(value, unit, expected):
    si, si_unit = to_si(value, unit)
    assert si_unit == expected[1]
    assert si == pytest.approx(expected[0], rel=1e-11)


def test_equal_quantities_normalise_to_the_same_float():
    # 500 * 1e-9 and 0.5 * 1e-6 differ in the last bit; rounding makes "=" work across units.
    assert 500 * 1e-9 != 0.5 * 1e-6
    assert to_si(500, "nm") == to_si(0.5, "um") == to_si(0.0005, "mm")


@pytest.mark.parametrize(
    "unit",
    [
        "um",
        "\u00b5m",
        "\u03bcm",
        "micron",
        "micrometers",
        "nm",
        "nanometre",
        "mm",
        "millimetre",
        "cm",
        "m",
        "inch",
    ],
)
def test_length_units_are_those_of_io(unit):
    # One table of length spellings: what io reads from a file header, a search understands.
    assert is_known_unit(unit)
    assert to_si(0.65, unit) == (pytest.approx(to_micrometres(0.65, unit) * 1e-6, rel=1e-12), "m")


def test_unknown_unit():
    with pytest.raises(
        InputError,
        match=r"unit 'parsec': unknown; expected a length \(m, cm, mm, um, nm, ...\) or one of",
    ):
        to_si(1, "parsec")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5 um", (0.5, "um")),
        ("0.5um", (0.5, "um")),
        ("128", (128.0, "")),
        ("-1.5e3 eV", (-1500.0, "eV")),
        (".25 s", (0.25, "s")),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("voxel_size>0.5 um", Condition("voxel_size", ">", 0.5, "um")),
        ("voxel_size < 2mm", Condition("voxel_size", "<", 2.0, "mm")),
        ("dicom.Rows=128", Condition("dicom.Rows", "=", 128.0)),
        ("dicom.Rows==128", Condition("dicom.Rows", "=", 128.0)),
        ("dicom.Modality=CT", Condition("dicom.Modality", "=", "CT")),
        ('name="128"', Condition("name", "=", "128")),
        ("sample=12abc", Condition("sample", "=", "12abc")),
        (
            "hdf5.entry.instrument.source.energy>20 keV",
            Condition("hdf5.entry.instrument.source.energy", ">", 20.0, "keV"),
        ),
    ],
)
def test_parse_condition(text, expected):
    condition = parse_condition(text)
    assert condition == expected
    assert condition.numeric == isinstance(expected.value, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("voxel_size", "expected KEY=VALUE"),
        ("voxel_size>", "expected KEY=VALUE"),
        ("voxel_size>large", "quantity 'large'"),
        ("voxel_size>1 parsec", "unit 'parsec'"),
        ("a;DROP TABLE datasets=1", "expected KEY=VALUE"),
        ("a;DROP=1", "condition key"),
        ("$where=1", "condition key"),
        ("a..b=1", "condition key"),
        ("voxel_size >= 4 um", "use =, > or <"),
        ("rows != 3", "use =, > or <"),
    ],
)
def test_bad_conditions(text, message):
    with pytest.raises(InputError, match=message):
        parse_condition(text)


def test_condition_validation():
    with pytest.raises(InputError, match="needs a number"):
        Condition("modality", ">", "CT")
    with pytest.raises(InputError, match="a unit needs a numeric value"):
        Condition("modality", "=", "CT", "mm")
    with pytest.raises(InputError, match="relation"):
        Condition("x", ">=", 1.0)
    assert Condition("x", ">", 3).value == 3.0  # ints become floats
    assert Condition("voxel_size", ">", 0.5, "um").value_si() == (5e-7, "m")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"skip": -1}, "skip"),
        ({"sort": "pid"}, "sort field"),
        ({"dataset_type": "processed"}, "dataset type"),
        ({"created_from": "2024-01-01"}, "created_from"),
        ({"skip": MAX_SKIP + 1}, f"skip {MAX_SKIP + 1}: expected an integer from 0 to {MAX_SKIP}"),
        ({"skip": 10**20}, "skip"),
        (
            {"text": "x" * (MAX_TEXT_CHARS + 1)},
            f"search text: {MAX_TEXT_CHARS + 1} characters; expected at most",
        ),
        (
            {"text": " ".join(["bone"] * (MAX_TERMS + 1))},
            f"search text: {MAX_TERMS + 1} words; expected at most",
        ),
        (
            {"text": '"' + " ".join(["bone"] * (MAX_TERMS + 1)) + '"'},
            "words",
        ),  # phrase words count too
        (
            {"conditions": [Condition("rows", "=", float(n)) for n in range(MAX_TERMS + 1)]},
            "query conditions",
        ),
        ({"keywords": ["k"] * (MAX_TERMS + 1)}, "query keywords"),
        ({"owner_groups": ["g"] * (MAX_TERMS + 1)}, "query owner_groups"),
        ({"text": None}, "search text: expected a string"),
    ],
)
def test_query_validation(kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        Query(**kwargs)
    assert "\n" not in str(error.value)


def test_queries_at_the_limits_are_accepted():
    Query(
        text=" ".join(["x" * 14] * MAX_TERMS)[:MAX_TEXT_CHARS],
        skip=MAX_SKIP,
        limit=1000,
        keywords=("k",) * MAX_TERMS,
        conditions=(parse_condition("rows=1"),) * MAX_TERMS,
    )


def test_an_over_long_search_is_refused_quickly(tmp_path):
    # Unbounded text once held SQLite for 18 s; now it never reaches the backend.
    catalogue = SQLiteCatalogue(tmp_path / "c.sqlite")
    many_words = " ".join(f"w{n}" for n in range(100))
    assert len(many_words) <= MAX_TEXT_CHARS
    for text in ("implant " * 1_000_000, many_words):
        start = time.perf_counter()
        with pytest.raises(InputError, match="search text"):
            catalogue.search(Query(text))
        assert time.perf_counter() - start < 0.5
    assert catalogue.search(Query(" ".join(["implant"] * MAX_TERMS))).total == 0


def test_query_text_terms():
    assert Query("Implant  screw-thread").text_terms() == (["implant", "screw", "thread"], [])
    assert Query('"Mg-Gd screw" week "rat tibia"').text_terms() == (
        ["week"],
        [["mg", "gd", "screw"], ["rat", "tibia"]],
    )
    assert Query('stray " quote').text_terms() == (["stray", "quote"], [])


def test_query_times_are_utc():
    naive = Query(created_from=dt.datetime(2024, 5, 1, 12))
    assert naive.created_from == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    cest = dt.timezone(dt.timedelta(hours=2))
    assert Query(created_to=dt.datetime(2024, 5, 1, 12, tzinfo=cest)).created_to.hour == 10


def test_parse_time():
    assert parse_time("2024-05-01") == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert parse_time("2024-05-01", end_of_day=True) == dt.datetime(
        2024, 5, 1, 23, 59, 59, 999000, tzinfo=dt.UTC
    )
    assert parse_time("2024-05-01T10:00:00Z").hour == 10
    with pytest.raises(InputError, match="date '01.05.2024'"):
        parse_time("01.05.2024")
