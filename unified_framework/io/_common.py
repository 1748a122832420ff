"""Helpers shared by the format backends: units, metadata, chunking, progress."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InputError
from .volume import check_ndim

# Length units seen in TIFF/HDF5/Zarr/NIfTI/DICOM metadata -> size in micrometres.
_UNIT_IN_UM = {
    "um": Decimal(1),
    "µm": Decimal(1),
    "μm": Decimal(1),
    "\\u00b5m": Decimal(1),
    "micron": Decimal(1),
    "microns": Decimal(1),
    "micrometer": Decimal(1),
    "micrometre": Decimal(1),
    "micrometers": Decimal(1),
    "nm": Decimal("0.001"),
    "nanometer": Decimal("0.001"),
    "nanometre": Decimal("0.001"),
    "mm": Decimal(1000),
    "millimeter": Decimal(1000),
    "millimetre": Decimal(1000),
    "cm": Decimal(10000),
    "centimeter": Decimal(10000),
    "centimetre": Decimal(10000),
    "m": Decimal(1000000),
    "meter": Decimal(1000000),
    "metre": Decimal(1000000),
    "inch": Decimal(25400),
    "in": Decimal(25400),
}


def exact_decimal(value: Any) -> Decimal:
    """The shortest decimal that reads back as ``value`` (float32 values stay short).

    ``float32(0.00065)`` becomes ``Decimal('0.00065')``, not the binary expansion, so
    unit conversions of spacings stored in single precision give the intended number.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, Fraction):
        return Decimal(value.numerator) / Decimal(value.denominator)
    if isinstance(value, (np.floating, np.integer)):
        return Decimal(str(value))
    if isinstance(value, str):
        return Decimal(value.strip())
    return Decimal(repr(float(value)))


def unit_factor(unit: str | None) -> Decimal | None:
    """Micrometres per ``unit``; None if the unit is not a known length unit."""
    if unit is None:
        return None
    return _UNIT_IN_UM.get(str(unit).strip().lower().replace("\u00b5", "µ").replace("μ", "µ"))


def to_micrometres(value: Any, unit: str | None = "um") -> float:
    """Convert a length in ``unit`` to micrometres without binary rounding noise."""
    factor = unit_factor(unit)
    if factor is None:
        raise ValueError(f"unknown length unit {unit!r}")
    return float(exact_decimal(value) * factor)


def from_micrometres(value: float | Decimal, unit: str) -> Decimal:
    """Convert micrometres to ``unit`` exactly (as a Decimal)."""
    factor = unit_factor(unit)
    if factor is None:
        raise ValueError(f"unknown length unit {unit!r}")
    return exact_decimal(value) / factor


def jsonable(value: Any, depth: int = 0) -> Any:
    """Return ``value`` reduced to what JSON can hold, or None if it cannot be.

    Numpy scalars and small arrays become numbers and lists, bytes are decoded as
    UTF-8 when possible, dicts keep their representable entries.
    """
    if depth > 8:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").rstrip("\x00")
        except UnicodeDecodeError:
            return None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), depth + 1) if value.size <= 1024 else None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            item = jsonable(item, depth + 1)
            if item is not None:
                out[str(key)] = item
        return out
    if isinstance(value, (list, tuple)):
        items = [jsonable(item, depth + 1) for item in value]
        return items if all(item is not None for item in items) else None
    return None


def source_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Source metadata to store in an output, without the copy a previous write stored.

    Dropping nested ``source_metadata`` keeps repeated conversions from nesting ever
    deeper copies of the same attributes.
    """

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "source_metadata"}
        return value

    return strip(jsonable(dict(metadata)) or {})


#: Metadata entries that format writers read back (NIfTI sform/qform codes, DICOM
#: modality and slice thickness, ...): HDF5 and Zarr readers restore them from the
#: stored ``source_metadata``, so they survive conversions through those formats.
CARRIED_KEYS = ("nifti", "dicom")


def carried(stored: Any) -> dict[str, Any]:
    """The :data:`CARRIED_KEYS` entries of a stored ``source_metadata`` dict."""
    if not isinstance(stored, Mapping):
        return {}
    return {key: stored[key] for key in CARRIED_KEYS if isinstance(stored.get(key), dict)}


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """:func:`source_metadata` as a JSON string, for formats whose attributes are scalars."""
    return json.dumps(source_metadata(metadata), sort_keys=True)


#: Blosc codecs a Zarr output may use (``write_volume(compression=...)``), default first.
ZARR_COMPRESSIONS = ("zstd", "lz4", "none")


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """Chunk shape for HDF5/Zarr outputs: 64^3 blocks for volumes, 512^2 tiles for images."""
    edge = 64 if len(shape) == 3 else 512
    return tuple(max(1, min(int(n), edge)) for n in shape)


def pick_dataset(
    container: str, candidates: Mapping[str, tuple[tuple[int, ...], str]], expect_ndim: Any
) -> str:
    """Choose the one image dataset among ``candidates`` (name -> (shape, dtype)).

    Raises
    ------
    InputError
        If none or several datasets have an accepted number of dimensions.
    """
    allowed = (expect_ndim,) if isinstance(expect_ndim, int) else tuple(expect_ndim)
    fitting = [name for name, (shape, _) in candidates.items() if len(shape) in allowed]
    if len(fitting) == 1:
        return fitting[0]
    listing = describe_datasets(candidates) or "none"
    wanted = "/".join(f"{n}D" for n in allowed)
    if not fitting:
        if len(candidates) == 1:
            # One dataset of the wrong rank: report the rank, as for any other file.
            check_ndim(
                next(iter(candidates.values()))[0],
                allowed,
                f"{container}::{next(iter(candidates))}",
            )
        raise InputError(
            f"{container}: no {wanted} dataset found (datasets: {listing}); expected one image or volume dataset"
        )
    raise InputError(
        f"{container}: {len(fitting)} {wanted} datasets, choose one with dataset= or FILE::DATASET (datasets: {listing})"
    )


def describe_datasets(
    candidates: Mapping[str, tuple[tuple[int, ...], str]], limit: int = 20
) -> str:
    """``'/a (16x32x24 uint16), /b (10 float64)'`` for an error message (at most ``limit``)."""
    items = [
        f"{name} ({'x'.join(map(str, shape)) or 'scalar'} {dtype})"
        for name, (shape, dtype) in candidates.items()
    ]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def rational(value: Decimal | Fraction) -> tuple[int, int]:
    """``value`` as a (numerator, denominator) pair that fits TIFF's 32-bit rationals."""
    frac = Fraction(value)
    if frac.numerator >= 2**32 or frac.denominator >= 2**32:
        frac = frac.limit_denominator(2**32 - 1)
        while frac.numerator >= 2**32:
            frac = Fraction(frac.numerator // 2, max(1, frac.denominator // 2))
    return frac.numerator, frac.denominator
