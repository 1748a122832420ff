"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel.

Axis order: NIfTI stores voxels with x varying fastest and nibabel returns arrays
indexed ``[x, y, z]``. The framework's ``(z, y, x)`` array is its transpose, and its
C-order bytes are exactly NIfTI's on-disk order, so writing streams slabs of z straight
to the file. The voxel grid is kept as stored: the affine (orientation, origin) is not
applied to the data, it becomes the volume's geometry (see :mod:`.geometry`).

Geometry: the affine nibabel chooses (sform if its code is set, else qform, else the
pixdim diagonal) in the unit of ``xyzt_units`` (millimetres when unset) gives
``spacing``, ``origin`` and ``direction``; ``sform_code``/``qform_code`` are kept in
``metadata["nifti"]`` and written back. Files are written in millimetres (the unit
other tools assume) with sform and qform set to the volume's affine. The header is
single precision, so about 7 significant digits survive.

A 4D file (time series, several volumes) is refused: the framework's volumes are 3D.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._common import from_micrometres, jsonable, to_micrometres, unit_factor
from .formats import library_errors, suffix_of
from .geometry import from_nifti_affine, split_affine, to_nifti_affine
from .volume import Volume, check_memory, check_ndim, iter_slabs, slices_per_slab

_HEADER_KEYS = (
    "descrip",
    "intent_name",
    "scl_slope",
    "scl_inter",
    "cal_min",
    "cal_max",
    "xyzt_units",
)
#: Codes written when the source is no NIfTI: 1, "scanner anatomical" (what dcm2niix writes).
_DEFAULT_CODES = {"sform_code": 1, "qform_code": 1}


def read_nifti(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a NIfTI image; axes are reversed to ``(z, y, x)`` and pixdim converted to µm."""
    import nibabel as nib

    # Eager reads load into memory (no memory map that would pin the file).
    loaded = nib.load(str(path), mmap=lazy)
    if not isinstance(loaded, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: {type(loaded).__name__}; expected a NIfTI-1 or NIfTI-2 image")
    img = loaded
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # 3D volumes saved with singleton t/channel axes
        shape = shape[:-1]
    if len(shape) == 4:
        raise InputError(
            f"{path}: 4D NIfTI with {shape[3]} volumes (x, y, z, t = {'x'.join(map(str, shape))}); expected one 3D "
            "volume: save the one you need as its own file (e.g. nibabel's img.slicer[..., 0])"
        )
    check_ndim(shape[::-1], expect_ndim, str(path))
    _check_size(path, img, shape)
    unit = header.get_xyzt_units()[0]
    unit = unit if unit_factor(unit) else "mm"  # NIfTI: unknown spatial unit means mm
    lengths, origin, direction = split_affine(
        from_nifti_affine(img.affine, unit), f"{path}: affine"
    )
    # The affine's column lengths are the voxel size; pixdim says the same in exact
    # decimals where they agree (a rotated affine's lengths carry float32 noise).
    zooms = [to_micrometres(z, unit) for z in header.get_zooms()[: len(shape)]][::-1]
    spacing = tuple(
        z if abs(z - s) <= 1e-6 * s else s for s, z in zip(lengths[-len(shape) :], zooms)
    )
    # dataobj is an ArrayProxy (it reshapes lazily); nibabel annotates it as ArrayLike.
    proxy = img.dataobj.reshape(shape) if shape != tuple(img.shape) else img.dataobj  # type: ignore[attr-defined]
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
        "header": {
            key: value for key in _HEADER_KEYS if (value := jsonable(header[key])) is not None
        },
        "nifti": {"sform_code": int(header["sform_code"]), "qform_code": int(header["qform_code"])},
        "spatial_unit": unit,
        "spacing_known": True,  # pixdim is a required field (an unknown unit means mm)
        "nifti_shape_xyz": list(shape),
        "axis_order_on_disk": "x,y,z",
    }
    return Volume(data, spacing, metadata, path, origin, direction)


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


def _check_size(path: Path, img: Any, shape: tuple[int, ...]) -> None:
    """Raise if an uncompressed file is shorter than its header promises."""
    if suffix_of(path) != ".nii":
        return  # a truncated .nii.gz shows up as an error while decompressing
    # The data offset nibabel reads from (vox_offset of 0 in old files still means
    # the data start after the 352-byte header), not the header field itself.
    offset = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset())
    expected = offset + int(np.prod(shape)) * img.header.get_data_dtype().itemsize
    size = path.stat().st_size
    if size < expected:
        raise InputError(
            f"{path}: truncated NIfTI: {size} bytes but the header promises {expected}; expected a complete file"
        )


def write_nifti(
    path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str
) -> None:
    """Stream a NIfTI-1 file (gzip-compressed for ``.nii.gz``), slab by slab."""
    import nibabel as nib

    data = volume.data
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape[::-1])
    affine = to_nifti_affine(volume.affine)
    codes = _codes(volume.metadata.get("nifti"))
    header.set_qform(affine, code=codes["qform_code"])
    header.set_sform(affine, code=codes["sform_code"])
    # pixdim from the decimal spacing, not from the float column lengths set_qform took.
    header.set_zooms([float(from_micrometres(s, "mm")) for s in volume.spacing[::-1]])
    header.set_xyzt_units("mm")
    header["descrip"] = b"written by mdlma unified framework"
    offset = 352  # 348-byte header plus the 4-byte (empty) extension flag
    header.set_data_offset(offset)
    disk_dtype = header.get_data_dtype()
    opener = (
        gzip.open(path, "wb", compresslevel=4) if suffix_of(path) == ".nii.gz" else open(path, "wb")
    )
    with opener as f:
        f.write(header.binaryblock)
        f.write(b"\x00" * (offset - len(header.binaryblock)))
        for _, _, block in iter_slabs(data, desc=f"writing {name}"):
            f.write(np.ascontiguousarray(block, dtype=disk_dtype).tobytes())


def _codes(kept: Any) -> dict[str, int]:
    """sform/qform codes kept from a NIfTI source (``metadata["nifti"]``), else scanner (1)."""
    codes = dict(_DEFAULT_CODES)
    if isinstance(kept, dict):
        for key in codes:
            value = kept.get(key)
            if isinstance(value, int) and 0 <= value <= 4:
                codes[key] = value
    return codes
