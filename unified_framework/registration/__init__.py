"""Registration of two 3D scans: pre-alignment, convexAdam, VoxelMorph, fields and quality.

* :mod:`.affine` -- rigid/affine pre-alignment (SimpleITK, Mattes MI, multi-resolution)
* :mod:`.convexadam` -- convexAdam with MIND-SSC features (mono- and multi-modal)
* :mod:`.voxelmorph` -- train and apply VoxelMorph (``VxmPairwise``, torch)
* :mod:`.fields` -- the displacement-field convention; warp, compose, invert, save/load
* :mod:`.quality` -- Jacobian, folding, Dice/HD95, TRE, NCC/MI before and after
* :mod:`.run` -- one registration from checks to the result folder

numpy in, numpy out; torch only inside the methods. See ``docs/registration.md``.

Examples
--------
>>> from unified_framework.data import make_registration_pair
>>> from unified_framework.registration import register_volumes
>>> pair = make_registration_pair((32, 32, 32))
>>> result = register_volumes(pair.fixed, pair.moving, pair.spacing, "affine", prealign="rigid")
>>> sorted(result.report["jacobian"])
['folding_fraction', 'max', 'mean', 'min']
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use (PEP 562): 'mdlma' builds every sub-command's parser, which
# reads the method parameters' defaults, and must not pay for SciPy or torch then.
_EXPORTS = {
    "compose": "fields",
    "invert": "fields",
    "load_field": "fields",
    "save_field": "fields",
    "warp": "fields",
    "jacobian_determinant": "quality",
    "quality_report": "quality",
    "quality_rows": "quality",
    "read_landmarks": "quality",
    "RegistrationResult": "run",
    "apply_field": "run",
    "auto_bin": "run",
    "register_volumes": "run",
    "write_outputs": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
