"""Physical units for scientific metadata: conversion to SI and parsing of quantities.

SciCat stores every scientific metadata entry as ``{"value": v, "unit": u}`` and adds
``valueSI``/``unitSI`` so that conditions such as ``voxel_size > 0.5 um`` compare values
given in different units. This module does the same here (pint would be a heavy
dependency for a dozen units). Length units are :mod:`unified_framework.io`'s (its
``unit_factor``: every spelling its readers understand, ``um``, ``µm``, ``micron``,
``mm``, ...), so a length means the same to the catalogue as to io; the table here adds
the other dimensions. SI values are rounded to 12 significant digits so that ``500 nm``
and ``0.5 um`` normalise to the *same* float and compare equal.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from ..errors import InputError
from ..io._common import exact_decimal, unit_factor

# unit -> (factor to the SI unit, SI unit), for what io's length table does not hold.
_UNITS: dict[str, tuple[float, str]] = {}
_MICROMETRE = Decimal("1e-6")  # metres per micrometre (io's length factors are in um)
_LENGTH_EXAMPLES = ("m", "cm", "mm", "um", "nm")  # for messages; io accepts more spellings


def _add(si_unit: str, factors: dict[str, float]) -> None:
    for name, factor in factors.items():
        _UNITS[name] = (factor, si_unit)


_add("m", {"pm": 1e-12, "\u00c5": 1e-10, "angstrom": 1e-10})  # atomic scales, unknown to io
_add(
    "s",
    {
        "s": 1.0,
        "sec": 1.0,
        "ms": 1e-3,
        "us": 1e-6,
        "\u00b5s": 1e-6,
        "\u03bcs": 1e-6,
        "ns": 1e-9,
        "min": 60.0,
        "h": 3600.0,
    },
)
_add("J", {"J": 1.0, "eV": 1.602176634e-19, "keV": 1.602176634e-16, "MeV": 1.602176634e-13})
_add("Hz", {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9})
_add("A", {"A": 1.0, "mA": 1e-3, "uA": 1e-6, "\u00b5A": 1e-6})
_add("V", {"V": 1.0, "kV": 1e3, "mV": 1e-3})
_add("K", {"K": 1.0})
_add("T", {"T": 1.0})
_add("rad", {"rad": 1.0, "mrad": 1e-3, "deg": math.pi / 180.0, "degree": math.pi / 180.0})
_add(
    "B",
    {
        "B": 1.0,
        "kB": 1e3,
        "MB": 1e6,
        "GB": 1e9,
        "TB": 1e12,
        "KiB": 1024.0,
        "MiB": 1024.0**2,
        "GiB": 1024.0**3,
        "TiB": 1024.0**4,
    },
)

#: Units accepted in metadata and search conditions besides the length units of
#: :mod:`unified_framework.io` (``m``, ``mm``, ``um``/``µm``/``micron``, ``nm``, ``inch``, ...).
KNOWN_UNITS: tuple[str, ...] = tuple(sorted(_UNITS))

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


def _round_significant(value: float, digits: int = 12) -> float:
    return float(f"{value:.{digits}g}")


def is_known_unit(unit: str) -> bool:
    """Return True if ``unit`` is a length io knows or in the conversion table.

    Examples
    --------
    >>> is_known_unit("micron"), is_known_unit("keV"), is_known_unit("parsec")
    (True, True, False)
    """
    return unit in _UNITS or unit_factor(unit) is not None


def to_si(value: float, unit: str) -> tuple[float, str]:
    """Convert ``value`` given in ``unit`` to the SI unit of the same dimension.

    Parameters
    ----------
    value : float
        Numeric value.
    unit : str
        A length unit of :mod:`unified_framework.io` or one of :data:`KNOWN_UNITS`
        (``"um"``, ``"keV"``, ``"ms"``, ...).

    Returns
    -------
    (float, str)
        The value in SI (rounded to 12 significant digits) and the SI unit symbol.

    Raises
    ------
    InputError
        If the unit is unknown.
    """
    if unit in _UNITS:
        factor, si_unit = _UNITS[unit]
        return _round_significant(float(value) * factor), si_unit
    micrometres = unit_factor(unit)
    if micrometres is None:
        raise InputError(
            f"unit {unit!r}: unknown; expected a length ({', '.join(_LENGTH_EXAMPLES)}, ...)"
            f" or one of {', '.join(KNOWN_UNITS)}"
        )
    return _round_significant(float(exact_decimal(value) * micrometres * _MICROMETRE)), "m"


def is_quantity(text: str) -> bool:
    """Return True if ``text`` is a number optionally followed by a known unit."""
    match = _QUANTITY.match(text)
    return match is not None and (not match.group(2) or is_known_unit(match.group(2)))


def parse_quantity(text: str) -> tuple[float, str]:
    """Split ``"0.5 um"`` / ``"0.5um"`` / ``"128"`` into ``(0.5, "um")`` / ``(128.0, "")``.

    Raises
    ------
    InputError
        If ``text`` is not a number optionally followed by a known unit.
    """
    match = _QUANTITY.match(text)
    if not match:
        raise InputError(f"quantity {text!r}: expected a number optionally followed by a unit")
    number, unit = match.groups()
    if unit and not is_known_unit(unit):
        to_si(0.0, unit)  # raises the InputError listing the known units
    return float(number), unit
