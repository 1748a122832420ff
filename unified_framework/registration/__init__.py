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

from .fields import compose, invert, load_field, save_field, warp
from .quality import jacobian_determinant, quality_report, quality_rows, read_landmarks
from .run import RegistrationResult, apply_field, auto_bin, register_volumes, write_outputs

__all__ = [
    "RegistrationResult",
    "apply_field",
    "auto_bin",
    "compose",
    "invert",
    "jacobian_determinant",
    "load_field",
    "quality_report",
    "quality_rows",
    "read_landmarks",
    "register_volumes",
    "save_field",
    "warp",
    "write_outputs",
]
