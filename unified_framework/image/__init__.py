"""Operations on 2D colour images: grey conversion and stain separation.

Examples
--------
>>> from unified_framework.io import read_volume
>>> from unified_framework.image import separate_stains, to_grey
>>> slide = read_volume("slide.svs", level=2, lazy=True)      # doctest: +SKIP
>>> grey = to_grey(slide)                                    # doctest: +SKIP
>>> hed = separate_stains(slide, "hed")                      # doctest: +SKIP
"""

from .colour import STAINS, separate_stains, to_grey

__all__ = ["STAINS", "separate_stains", "to_grey"]
