"""Read and write 2D images and 3D volumes: TIFF (OME, SVS), HDF5/NeXus, NIfTI, DICOM, Zarr, PNG, JPEG.

Every reader returns a :class:`Volume` with axis order ``(z, y, x)`` (``(y, x)`` for
images, ``(y, x, c)`` for colour images, see ``Volume.axes``), the voxel size in
micrometres and the volume's place in the world (origin, direction, ``affine``);
``lazy=True`` gives a dask array that is
read chunk by chunk, and every writer accepts dask arrays and writes them slab by slab.
See ``docs/io.md``.

Examples
--------
>>> from unified_framework.io import read_volume, write_volume
>>> vol = read_volume("scan.h5::/entry/data/data", lazy=True)    # doctest: +SKIP
>>> write_volume("scan.zarr", vol)                               # doctest: +SKIP
"""

from .api import SUPPORTED_FORMATS, detect_format, open_volume, read_volume, write_volume
from .geometry import resample_to
from .volume import (
    Volume,
    check_finite,
    check_grey,
    check_ndim,
    describe_dtype,
    iter_slabs,
    value_range,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "Volume",
    "check_finite",
    "check_grey",
    "check_ndim",
    "describe_dtype",
    "detect_format",
    "iter_slabs",
    "open_volume",
    "read_volume",
    "resample_to",
    "value_range",
    "write_volume",
]
