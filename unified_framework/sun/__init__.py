"""SUN, "Scaling the U-net" (Baltruschat et al., Sci Rep 11:24237, 2021).

A scaled 2D U-Net predicts slices along three orthogonal and six diagonal axes; the
per-axis class probabilities are fused by soft voting into one accumulator, and the
fused distribution gives a confidence measure. Layout follows nnU-Net v2:
:mod:`.networks` (the U-Net), :mod:`.axes` (slicing geometry), :mod:`.training`,
:mod:`.inference` and :mod:`.model_package`. See ``docs/sun.md``.

Torch is imported on first use of a sub-module, not by this package.
"""

__all__ = ["axes", "inference", "model_package", "networks", "training"]
