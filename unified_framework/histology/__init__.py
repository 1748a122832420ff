"""Virtual histology: virtual sections of a volume and locating real sections in it.

Planes are given in world coordinates (µm, ``(z, y, x)``, see ``docs/io.md``, "World
geometry"); see ``docs/histology.md``.

Examples
--------
>>> from unified_framework.io import read_volume
>>> from unified_framework.histology import Plane, virtual_section
>>> vol = read_volume("scan.zarr", lazy=True)                         # doctest: +SKIP
>>> cut = virtual_section(vol, Plane((320, 160, 160), (0.9, 0.1, 0.42)), pixel_size=2.5, thickness=5)  # doctest: +SKIP
"""

from .plane import Plane, angle_between, angles_from_normal, normal_from_angles, volume_centre
from .sampling import sample_points, virtual_section, virtual_stack

__all__ = [
    "Plane",
    "angle_between",
    "angles_from_normal",
    "normal_from_angles",
    "sample_points",
    "virtual_section",
    "virtual_stack",
    "volume_centre",
]
