"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel.

Axis order: NIfTI stores voxels with x varying fastest and nibabel returns arrays
indexed ``[x, y, z]``. The framework's ``(z, y, x)`` array is its transpose, and its
C-order bytes are exactly NIfTI's on-disk order, so writing streams slabs of z straight
to the file. The voxel grid is kept as stored: the affine (orientation, origin) is not
applied, only reported in ``metadata["affine"]``.

Spacing: NIfTI's ``pixdim`` is in the unit of ``xyzt_units`` (millimetres when unset);
it is converted to micrometres on reading, and written in millimetres (the unit other
tools assume). ``pixdim`` is single precision, so about 7 significant digits survive.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import from_micrometres, jsonable, to_micrometres, unit_factor
from .formats import library_errors, suffix_of
from .volume import Volume, check_memory, check_ndim, iter_slabs, slices_per_slab

_HEADER_KEYS = ("descrip", "intent_name", "qform_code", "sform_code", "scl_slope", "scl_inter", "cal_min", "cal_max", "xyzt_units")


def read_nifti(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a NIfTI image; axes are reversed to ``(z, y, x)`` and pixdim converted to µm."""
    import nibabel as nib

    # Eager reads load into memory (no memory map that would pin the file).
    img = nib.load(str(path), mmap=lazy)
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # 3D volumes saved with singleton t/channel axes
        shape = shape[:-1]
    check_ndim(shape[::-1], expect_ndim, str(path))
    _check_size(path, header, shape)
    unit = header.get_xyzt_units()[0]
    unit = unit if unit_factor(unit) else "mm"  # NIfTI: unknown spatial unit means mm
    zooms = header.get_zooms()[: len(shape)]
    spacing = tuple(to_micrometres(z, unit) for z in zooms[::-1])
    proxy = img.dataobj.reshape(shape) if shape != tuple(img.shape) else img.dataobj
    if lazy:
        import dask.array as da

        # nibabel order (x, y, z): chunks of whole z planes, contiguous in the file.
        per_chunk = slices_per_slab(shape[::-1], header.get_data_dtype())
        chunks = shape[:-1] + (per_chunk,) if len(shape) == 3 else shape
        data = da.from_array(_ScaledProxy(proxy, shape, path), chunks=chunks, name=False).T
    else:
        check_memory(shape, header.get_data_dtype(), str(path))
        data = np.asarray(proxy).T
        data = np.ascontiguousarray(data)
    metadata = {
        "header": {key: value for key in _HEADER_KEYS if (value := jsonable(header[key])) is not None},
        "affine": jsonable(img.affine),
        "spatial_unit": unit,
        "nifti_shape_xyz": list(shape),
        "axis_order_on_disk": "x,y,z",
    }
    return Volume(data, spacing, metadata, path)


class _ScaledProxy:
    """Array-like view of a nibabel proxy for dask.

    Slices of a proxy apply ``scl_slope``/``scl_inter``, which changes the type; dask
    needs that type up front. Errors while reading (a truncated ``.nii.gz`` is only
    noticed then) become :class:`InputError` naming the file.
    """

    def __init__(self, proxy: Any, shape: tuple[int, ...], path: Path) -> None:
        self.proxy, self.shape, self.ndim, self.path = proxy, shape, len(shape), path
        unscaled = proxy.slope == 1 and proxy.inter == 0
        self.dtype = np.dtype(proxy.dtype) if unscaled else self[(slice(0, 1),) * self.ndim].dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        with library_errors(self.path, "nifti"):
            return np.asarray(self.proxy[index], dtype=getattr(self, "dtype", None))


def _check_size(path: Path, header: Any, shape: tuple[int, ...]) -> None:
    """Raise if an uncompressed file is shorter than its header promises."""
    if suffix_of(path) != ".nii":
        return  # a truncated .nii.gz shows up as an error while decompressing
    expected = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    size = path.stat().st_size
    if size < expected:
        raise InputError(f"{path}: truncated NIfTI: {size} bytes but the header promises {expected}; expected a complete file")


def write_nifti(path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str) -> None:
    """Stream a NIfTI-1 file (gzip-compressed for ``.nii.gz``), slab by slab."""
    import nibabel as nib

    data = volume.data
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape[::-1])
    zooms_mm = [float(from_micrometres(s, "mm")) for s in volume.spacing[::-1]]
    header.set_zooms(zooms_mm)
    header.set_xyzt_units("mm")
    affine = np.diag(zooms_mm + [1.0] * (4 - len(zooms_mm)))
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["descrip"] = b"written by mdlma unified framework"
    offset = 352  # 348-byte header plus the 4-byte (empty) extension flag
    header.set_data_offset(offset)
    disk_dtype = header.get_data_dtype()
    opener = gzip.open(path, "wb", compresslevel=4) if suffix_of(path) == ".nii.gz" else open(path, "wb")
    with opener as f:
        f.write(header.binaryblock)
        f.write(b"\x00" * (offset - len(header.binaryblock)))
        for _, _, block in iter_slabs(data, desc=f"writing {name}"):
            f.write(np.ascontiguousarray(block, dtype=disk_dtype).tobytes())


