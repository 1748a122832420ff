"""Degradation analysis: the quantities implant studies publish, from any segmentation.

* :mod:`.roles` -- which label is bone, residual material, degradation layer
* :mod:`.thickness` -- local thickness (Hildebrand-Rüegsegger, porespy) in µm
* :mod:`.screw` -- a screw model (core radius, thread depth, pitch, axis) of the
  initial implant fitted to the residual material
* :mod:`.quantities` -- :func:`quantify`: volumes, degradation depth and rate,
  layer thickness, BV/TV shells, BIC, surface areas, fragments, region of interest
* :mod:`.uncertainty` -- ranges from SUN's fused probabilities (assigned each way, sampled)
* :mod:`.timeseries` -- several scans of one sample: register, map, change
* :mod:`.compare` -- one scan, several segmentations, side by side
* :mod:`.report` -- JSON and CSV

Definitions, formulas and references: ``docs/analysis.md``.

Examples
--------
>>> from unified_framework.data.degrading import make_degrading_cylinder
>>> from unified_framework.analysis import quantify
>>> labels, truth = make_degrading_cylinder((8, 64, 64))
>>> result = quantify(labels, (5.0, 5.0, 5.0), shells=2, shell_width=30.0)
>>> result.values["fragments"]
1
"""

from .quantities import AnalysisResult, elapsed_days, fit_cylinder, quantify, rasterize_cylinder
from .roles import ClassRoles, resolve_roles
from .screw import fit_screw, rasterize_screw
from .thickness import local_thickness

__all__ = [
    "AnalysisResult",
    "ClassRoles",
    "elapsed_days",
    "fit_cylinder",
    "fit_screw",
    "local_thickness",
    "quantify",
    "rasterize_cylinder",
    "rasterize_screw",
    "resolve_roles",
]
