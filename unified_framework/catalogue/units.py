"""Physical units for scientific metadata: conversion to SI and parsing of quantities.

SciCat stores every scientific metadata entry as ``{"value": v, "unit": u}`` and adds
``valueSI``/``unitSI`` so that conditions such as ``voxel_size > 0.5 um`` compare values
given in different units. This module is the small table that does the same here (pint
would be a heavy dependency for a dozen units). SI values are rounded to 12 significant
digits so that ``500 nm`` and ``0.5 um`` normalise to the *same* float and compare equal.
"""

from __future__ import annotations

import math
import re

from ..errors import InputError

# unit -> (factor to the SI unit, SI unit). Aliases list the spellings found in file
# headers (NIfTI "micron", ImageJ "\u00b5m", DICOM "mm").
_UNITS: dict[str, tuple[float, str]] = {}


def _add(si_unit: str, factors: dict[str, float]) -> None:
    for name, factor in factors.items():
        _UNITS[name] = (factor, si_unit)


_add(
    "m",
    {
        "m": 1.0, "km": 1e3, "cm": 1e-2, "mm": 1e-3,
        "um": 1e-6, "\u00b5m": 1e-6, "\u03bcm": 1e-6, "micron": 1e-6, "microns": 1e-6,
        "micrometer": 1e-6, "micrometre": 1e-6,
        "nm": 1e-9, "pm": 1e-12, "\u00c5": 1e-10, "angstrom": 1e-10,
        "inch": 0.0254, "in": 0.0254,
    },
)
_add(
    "s",
    {
        "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
        "ns": 1e-9, "min": 60.0, "h": 3600.0,
    },
)
_add("J", {"J": 1.0, "eV": 1.602176634e-19, "keV": 1.602176634e-16, "MeV": 1.602176634e-13})
_add("Hz", {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9})
_add("A", {"A": 1.0, "mA": 1e-3, "uA": 1e-6, "\u00b5A": 1e-6})
_add("V", {"V": 1.0, "kV": 1e3, "mV": 1e-3})
_add("K", {"K": 1.0})
_add("rad", {"rad": 1.0, "mrad": 1e-3, "deg": math.pi / 180.0, "degree": math.pi / 180.0})
_add("B", {"B": 1.0, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 1024.0,
           "MiB": 1024.0**2, "GiB": 1024.0**3, "TiB": 1024.0**4})

#: Units accepted in metadata and search conditions.
KNOWN_UNITS: tuple[str, ...] = tuple(sorted(_UNITS))

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


def _round_significant(value: float, digits: int = 12) -> float:
    return float(f"{value:.{digits}g}")


def is_known_unit(unit: str) -> bool:
    """Return True if ``unit`` is in the conversion table."""
    return unit in _UNITS


def to_si(value: float, unit: str) -> tuple[float, str]:
    """Convert ``value`` given in ``unit`` to the SI unit of the same dimension.

    Parameters
    ----------
    value : float
        Numeric value.
    unit : str
        A unit from :data:`KNOWN_UNITS` (``"um"``, ``"keV"``, ``"ms"``, ...).

    Returns
    -------
    (float, str)
        The value in SI (rounded to 12 significant digits) and the SI unit symbol.

    Raises
    ------
    InputError
        If the unit is unknown.
    """
    try:
        factor, si_unit = _UNITS[unit]
    except KeyError:
        raise InputError(
            f"unit {unit!r}: unknown; expected one of {', '.join(KNOWN_UNITS)}"
        ) from None
    return _round_significant(float(value) * factor), si_unit


def is_quantity(text: str) -> bool:
    """Return True if ``text`` is a number optionally followed by a known unit."""
    match = _QUANTITY.match(text)
    return bool(match) and (not match.group(2) or is_known_unit(match.group(2)))


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
