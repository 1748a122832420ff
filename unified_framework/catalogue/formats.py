"""Read what a volume file says about itself, with the format libraries, without its pixels.

Each reader returns a :class:`VolumeInfo`: shape and dtype (axis order z, y, x), voxel
size with its unit as the file states it, and the format's own tags as a nested dict of
SciCat scientific-metadata entries ``{"value": ..., "unit": ...}``. Only headers are read,
so a 100 GB scan is described in milliseconds.

DICOM patient identification (name, ID, birth date, ...) is deliberately never copied:
catalogues are shared, patient data must not leak into them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError

FORMATS = ("DICOM", "TIFF", "HDF5", "NIfTI", "Zarr")
_TIFF_SUFFIXES = {".tif", ".tiff"}
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".he5", ".nxs", ".nx5"}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_ENTRIES = 2000  # metadata entries per file: enough for NeXus, bounded for odd files
_MAX_STRING = 1000  # characters kept of long strings (descriptions, XML)


@dataclasses.dataclass
class VolumeInfo:
    """What a file says about the volume it holds.

    Attributes
    ----------
    format : str
        One of :data:`FORMATS`.
    shape : tuple of int
        Axis order z, y, x (plus trailing channels for RGB data; leading time for 4-D NIfTI).
    dtype : str
        NumPy dtype name.
    voxel_size : tuple of float or None
        Spacing per spatial axis (z, y, x, or y, x for a single image) in ``voxel_unit``.
    voxel_unit : str
        Unit of ``voxel_size`` as written in the file, e.g. ``"mm"`` for DICOM.
    tags : dict
        Format-specific metadata: nested dicts whose leaves are ``{"value", "unit"}``.
    """

    format: str
    shape: tuple[int, ...]
    dtype: str
    voxel_size: tuple[float, ...] | None
    voxel_unit: str
    tags: dict


def entry(value: Any, unit: str = "") -> dict:
    """A SciCat scientific-metadata entry ``{"value": value, "unit": unit}``."""
    return {"value": value, "unit": unit}


def plain(value: Any) -> Any:
    """Convert header values (NumPy scalars, bytes, tuples, small arrays) to JSON values.

    Returns None for values that cannot be represented (large arrays, objects).
    """
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.size > 64:
            return None
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.strip()[:_MAX_STRING]
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return None if any(i is None for i in items) or len(items) > 64 else items
    return None


def safe_key(name: str) -> str:
    """Make a header name usable as a metadata key (letters, digits, ``_`` and ``-``)."""
    key = re.sub(r"[^\w\-]+", "_", str(name)).strip("_")
    return key if key and not key[0] == "-" else f"_{key}"


def _unit_alias(unit: str) -> str:
    """Spellings found in headers -> the unit names of :mod:`.units`."""
    unit = unit.strip()
    return {"micron": "um", "microns": "um", "micrometer": "um", "\\u00B5m": "um",
            "\u00b5m": "um", "meter": "m", "metre": "m", "millimeter": "mm", "nanometer": "nm",
            "unknown": "", "pixel": ""}.get(unit, unit)


def detect_format(path: str | os.PathLike) -> str:
    """Name the format of a file or folder (one of :data:`FORMATS`).

    Raises
    ------
    InputError
        If the path does not exist or holds none of the supported formats.
    """
    path = Path(path)
    if path.is_dir():
        if path.suffix == ".zarr" or (path / ".zarray").exists() or (path / ".zgroup").exists():
            return "Zarr"
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if files and all(p.suffix.lower() in _TIFF_SUFFIXES for p in files):
            return "TIFF"
        if files and _is_dicom(files[0]):
            return "DICOM"
        raise InputError(
            f"{path}: folder is not a DICOM series, TIFF slice stack or Zarr store"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "NIfTI"
    with open(path, "rb") as handle:
        head = handle.read(132)
    # DICOM first: its 128-byte preamble may itself look like a TIFF header.
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        return "DICOM"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "TIFF"
    if head[:8] == _HDF5_SIGNATURE or path.suffix.lower() in _HDF5_SUFFIXES:
        return "HDF5"
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return "TIFF"
    raise InputError(f"{path}: unsupported format; expected DICOM, TIFF, HDF5/NeXus, NIfTI or Zarr")


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def read_volume_info(path: str | os.PathLike) -> VolumeInfo:
    """Describe the volume at ``path`` (file or folder) from its headers.

    Raises
    ------
    InputError
        If the format is unsupported or the file is corrupt or truncated.
    """
    readers: dict[str, Callable[[Path], VolumeInfo]] = {
        "DICOM": _read_dicom, "TIFF": _read_tiff, "HDF5": _read_hdf5,
        "NIfTI": _read_nifti, "Zarr": _read_zarr,
    }
    path = Path(path)
    fmt = detect_format(path)
    try:
        return readers[fmt](path)
    except InputError:
        raise
    except Exception as exc:  # the format libraries raise many types on corrupt input
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable {fmt} file ({message})") from None


# --- DICOM -----------------------------------------------------------------------------

# keyword -> unit. Patient identification is left out on purpose (see module docstring).
_DICOM_TAGS = {
    "Modality": "", "Manufacturer": "", "ManufacturerModelName": "", "SoftwareVersions": "",
    "StudyDate": "", "SeriesDate": "", "AcquisitionDate": "", "StudyDescription": "",
    "SeriesDescription": "", "SeriesNumber": "", "SeriesInstanceUID": "",
    "StudyInstanceUID": "", "SOPClassUID": "", "BodyPartExamined": "", "ImageType": "",
    "Rows": "", "Columns": "", "NumberOfFrames": "", "BitsAllocated": "", "BitsStored": "",
    "HighBit": "", "PixelRepresentation": "", "SamplesPerPixel": "",
    "PhotometricInterpretation": "", "RescaleSlope": "", "RescaleIntercept": "",
    "RescaleType": "", "PixelSpacing": "mm", "SliceThickness": "mm",
    "SpacingBetweenSlices": "mm", "KVP": "kV", "XRayTubeCurrent": "mA", "ExposureTime": "ms",
    "ConvolutionKernel": "", "MagneticFieldStrength": "T", "RepetitionTime": "ms",
    "EchoTime": "ms", "FlipAngle": "deg", "ImageOrientationPatient": "",
}


def _dicom_value(value: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, MultiValue) or isinstance(value, (list, tuple)):
        return plain([_dicom_value(v) for v in value])
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, DSfloat):
        return float(value)
    if isinstance(value, (int, float, bytes, str)):
        return plain(value)
    return plain(str(value))


def _read_dicom(path: Path) -> VolumeInfo:
    import pydicom

    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    headers = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(file, stop_before_pixels=True))
        except pydicom.errors.InvalidDicomError:
            raise InputError(f"{file}: not a DICOM file (in DICOM series {path})") from None
    series: dict[str, list] = {}
    for header in headers:
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(header)
    slices = max(series.values(), key=len)
    first = slices[0]
    for keyword in ("Rows", "Columns"):
        if keyword not in first:
            raise InputError(f"{files[0]}: DICOM file has no {keyword}; not an image")
    tags = {}
    for keyword, unit in _DICOM_TAGS.items():
        if keyword in first and first.get(keyword) not in (None, ""):
            value = _dicom_value(first.get(keyword))
            if value is not None:
                tags[keyword] = entry(value, unit)
    if getattr(first, "file_meta", None) is not None and "TransferSyntaxUID" in first.file_meta:
        tags["TransferSyntaxUID"] = entry(str(first.file_meta.TransferSyntaxUID))
    tags["NumberOfSeries"] = entry(len(series))
    tags["NumberOfSlices"] = entry(len(slices))

    frames = int(first.get("NumberOfFrames", 1) or 1)
    depth = frames if len(slices) == 1 else len(slices)
    bits = int(first.get("BitsAllocated", 16))
    signed = int(first.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits, 8) // 8}").name
    samples = int(first.get("SamplesPerPixel", 1))
    shape = (depth, int(first.Rows), int(first.Columns)) + ((samples,) if samples > 1 else ())
    if depth == 1:
        shape = shape[1:]

    voxel_size = None
    if "PixelSpacing" in first:
        dy, dx = (float(v) for v in first.PixelSpacing)
        if depth == 1:
            voxel_size = (dy, dx)
        else:
            dz = _dicom_slice_spacing(slices) or float(
                first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 0.0
            )
            voxel_size = (dz, dy, dx) if dz > 0 else None
    return VolumeInfo("DICOM", shape, dtype, voxel_size, "mm", tags)


def _dicom_slice_spacing(slices: list) -> float | None:
    """Median distance between slice positions along the slice normal (mm)."""
    if len(slices) < 2 or any("ImagePositionPatient" not in s for s in slices):
        return None
    orientation = slices[0].get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    positions = np.sort([float(np.dot(normal, np.asarray(s.ImagePositionPatient, float))) for s in slices])
    steps = np.diff(positions)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


# --- TIFF ------------------------------------------------------------------------------

_TIFF_TAGS = (
    "ImageWidth", "ImageLength", "BitsPerSample", "SamplesPerPixel", "SampleFormat",
    "Compression", "Predictor", "PhotometricInterpretation", "PlanarConfiguration",
    "XResolution", "YResolution", "ResolutionUnit", "TileWidth", "TileLength",
    "Software", "DateTime", "Artist", "Make", "Model", "ImageDescription",
)


def _tiff_tag_value(tag: Any) -> Any:
    value = tag.value
    if hasattr(value, "name") and not isinstance(value, (str, bytes)):  # enums
        return value.name
    if tag.name in ("XResolution", "YResolution") and isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None  # pixels per resolution unit
    return plain(value)


def _read_tiff(path: Path) -> VolumeInfo:
    import tifffile

    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES and not p.name.startswith(".")
    )
    with tifffile.TiffFile(files[0]) as tif:
        page = tif.pages[0]
        series = tif.series[0]
        shape, dtype = tuple(series.shape), np.dtype(series.dtype).name
        tags = {}
        for name in _TIFF_TAGS:
            tag = page.tags.get(name)
            if tag is not None and (value := _tiff_tag_value(tag)) is not None:
                tags[name] = entry(value)
        tags["NumberOfPages"] = entry(len(tif.pages))
        imagej = tif.imagej_metadata or {}
        for key, value in imagej.items():
            if (value := plain(value)) is not None and not isinstance(value, list):
                tags.setdefault("imagej", {})[safe_key(key)] = entry(value)
        xres = tags.get("XResolution", {}).get("value")
        yres = tags.get("YResolution", {}).get("value")
        res_unit = tags.get("ResolutionUnit", {}).get("value", "NONE")
        unit = _unit_alias(str(imagej.get("unit", ""))) if imagej else ""
        if not unit:
            unit = {"CENTIMETER": "cm", "INCH": "inch", "MILLIMETER": "mm", "MICROMETER": "um"}.get(res_unit, "")
        z_spacing = imagej.get("spacing")
        # tifffile's JSON description ("shaped" metadata): {"spacing": [z, y, x], "unit": "um"}
        shaped = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
        shaped_spacing = shaped.get("spacing") if isinstance(shaped, dict) else None
        shaped_unit = _unit_alias(str(shaped.get("unit", "um"))) if shaped_spacing else ""
    if len(files) > 1:
        shape = (len(files), *shape)
        tags["NumberOfFiles"] = entry(len(files))
    voxel_size = None
    if isinstance(shaped_spacing, list) and len(shaped_spacing) in (2, 3) and shaped_unit:
        voxel_size, unit = tuple(float(v) for v in shaped_spacing), shaped_unit
        if len(shape) == 3 and len(voxel_size) == 2 and z_spacing:
            voxel_size = (float(z_spacing), *voxel_size)
    elif unit and xres and yres:
        # 10 significant digits: 1 / (1 / 0.65) is 0.6499999999999999 in binary.
        in_plane = (float(f"{1.0 / yres:.10g}"), float(f"{1.0 / xres:.10g}"))
        spatial_ndim = len(shape) - (1 if tags.get("SamplesPerPixel", {}).get("value", 1) > 1 else 0)
        if spatial_ndim >= 3:
            voxel_size = (float(z_spacing), *in_plane) if z_spacing else None
        else:
            voxel_size = in_plane
    return VolumeInfo("TIFF", shape, dtype, voxel_size, unit, tags)


# --- HDF5 / NeXus ----------------------------------------------------------------------


def _hdf5_units(attrs: Any) -> str:
    for name in ("units", "unit"):
        if name in attrs:
            return str(plain(attrs[name]) or "")
    return ""


def _read_hdf5(path: Path) -> VolumeInfo:
    import h5py

    tags: dict = {}
    arrays: list[tuple[str, h5py.Dataset]] = []
    count = 0
    with h5py.File(path, "r") as handle:

        def node_for(name: str) -> dict:
            node = tags
            for part in name.split("/")[:-1]:
                node = node.setdefault(safe_key(part), {})
            return node

        def add_attrs(node: dict, attrs: Any, skip: tuple = ("units", "unit")) -> None:
            for key in attrs:
                if key in skip:
                    continue
                value = plain(attrs[key])
                if value is not None:
                    node[safe_key(key)] = entry(value)

        def visit(name: str, obj: Any) -> None:
            nonlocal count
            count += 1
            if count > _MAX_ENTRIES:
                return
            leaf_name = safe_key(name.rsplit("/", 1)[-1])
            parent = node_for(name)
            if isinstance(obj, h5py.Group):
                add_attrs(parent.setdefault(leaf_name, {}), obj.attrs)
                return
            if obj.size <= 16 and obj.dtype.kind in "biufSUO":
                value = plain(obj[()])
                if value is not None:
                    parent[leaf_name] = entry(value, _hdf5_units(obj.attrs))
                    return
            node = parent.setdefault(leaf_name, {})
            node["shape"] = entry(list(obj.shape))
            node["dtype"] = entry(obj.dtype.name)
            add_attrs(node, obj.attrs, skip=())
            arrays.append((name, obj))

        add_attrs(tags, handle.attrs)
        handle.visititems(visit)
        if count > _MAX_ENTRIES:
            tags["truncated_entries"] = entry(count - _MAX_ENTRIES)
        main = _hdf5_main_array(handle, arrays)
        if main is None:
            raise InputError(f"{path}: HDF5 file holds no array with 2 or more dimensions")
        tags["volume_dataset"] = entry("/" + main.name.lstrip("/"))
        shape, dtype = tuple(main.shape), main.dtype.name
        voxel_size, unit = _array_spacing(dict(main.attrs), len(shape))
    return VolumeInfo("HDF5", shape, dtype, voxel_size, unit, tags)


def _hdf5_main_array(handle: Any, arrays: list) -> Any:
    """NeXus default plot signal if declared, else the largest array with ndim >= 2."""
    import h5py

    node = handle
    try:
        for _ in range(8):  # NXroot -> NXentry -> NXdata; bounded in case "default" loops
            if not (isinstance(node, h5py.Group) and "default" in node.attrs):
                break
            node = node[plain(node.attrs["default"])]
        if isinstance(node, h5py.Group) and "signal" in node.attrs:
            signal = node[plain(node.attrs["signal"])]
            if isinstance(signal, h5py.Dataset) and signal.ndim >= 2:
                return signal
    except (KeyError, TypeError):
        pass  # a dangling NeXus "default" falls back to the largest array
    candidates = [obj for _, obj in arrays if obj.ndim >= 2]
    return max(candidates, key=lambda a: a.size, default=None)


def _array_spacing(attrs: dict, ndim: int) -> tuple[tuple[float, ...] | None, str]:
    """Voxel size from array attributes used by common writers.

    ``element_size_um`` (Fiji, ilastik), or ``spacing`` with ``spacing_unit``/``unit``
    (micrometres when no unit is given, the framework's convention).
    """
    for key, default_unit in (("element_size_um", "um"), ("spacing", "um"), ("voxel_size", "um")):
        if key in attrs:
            values = plain(attrs[key])
            if isinstance(values, (int, float)):
                values = [values] * min(ndim, 3)
            if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
                unit = next((plain(attrs[name]) for name in (f"{key}_units", f"{key}_unit", "units", "unit")
                             if name in attrs), default_unit)
                return tuple(float(v) for v in values[-3:]), _unit_alias(str(unit or default_unit))
    return None, ""


# --- NIfTI -----------------------------------------------------------------------------

_NIFTI_FIELDS = (
    "sizeof_hdr", "dim", "pixdim", "datatype", "bitpix", "intent_code", "intent_name",
    "qform_code", "sform_code", "scl_slope", "scl_inter", "cal_min", "cal_max",
    "slice_duration", "toffset", "xyzt_units", "descrip", "aux_file",
)


def _read_nifti(path: Path) -> VolumeInfo:
    import nibabel

    image = nibabel.load(path)
    header = image.header
    tags = {}
    for name in _NIFTI_FIELDS:
        if name in header:
            value = plain(header[name])
            if value not in (None, ""):
                tags[name] = entry(value)
    space_unit, time_unit = header.get_xyzt_units()
    tags["space_unit"] = entry(space_unit)
    tags["time_unit"] = entry(time_unit)
    tags["datatype_name"] = entry(np.dtype(header.get_data_dtype()).name)
    shape_xyz = tuple(int(n) for n in image.shape)
    # Zooms are float32 in the header: keep their 7 significant digits, not binary noise.
    zooms = tuple(float(f"{z:.7g}") for z in header.get_zooms())
    spatial = min(len(shape_xyz), 3)
    if len(shape_xyz) > 3 and time_unit != "unknown":
        tags["repetition_time"] = entry(zooms[3], {"sec": "s", "msec": "ms", "usec": "us"}.get(time_unit, ""))
    shape = tuple(reversed(shape_xyz[:spatial])) if len(shape_xyz) <= 3 else (
        *reversed(shape_xyz[3:]), *reversed(shape_xyz[:3]))
    voxel_size = tuple(reversed(zooms[:spatial]))
    unit = _unit_alias(space_unit) or "mm"  # NIfTI readers take unset units as millimetres
    return VolumeInfo("NIfTI", shape, np.dtype(header.get_data_dtype()).name, voxel_size, unit, tags)


# --- Zarr ------------------------------------------------------------------------------


def _zarr_attrs(attrs: dict) -> dict:
    """JSON attributes as metadata entries; ``{"value", "unit"}`` objects kept as they are."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, dict) and "value" in value:
            out[safe_key(key)] = entry(plain(value["value"]), str(value.get("unit", "")))
        elif isinstance(value, dict):
            out[safe_key(key)] = _zarr_attrs(value)
        elif (converted := plain(value)) is not None:
            out[safe_key(key)] = entry(converted)
        else:  # lists of objects (OME multiscales): keep as compact JSON text
            out[safe_key(key)] = entry(json.dumps(value)[:_MAX_STRING])
    return out


def _read_zarr(path: Path) -> VolumeInfo:
    import zarr

    root = zarr.open(str(path), mode="r")
    tags = _zarr_attrs(dict(root.attrs))
    if isinstance(root, zarr.Array):
        arrays = [("", root)]
    else:
        arrays = [(name, array) for name, array in root.arrays(recurse=True)]
        for name, array in arrays:
            node = tags
            for part in name.split("/"):
                node = node.setdefault(safe_key(part), {})
            node.update(_zarr_attrs(dict(array.attrs)))
            node["shape"] = entry(list(array.shape))
            node["dtype"] = entry(array.dtype.name)
            node["chunks"] = entry(list(array.chunks))
    if not arrays:
        raise InputError(f"{path}: Zarr group holds no arrays")
    multiscale_path, multiscale_spacing = _ome_level0(dict(root.attrs))
    main = dict(arrays).get(multiscale_path) if multiscale_path else None
    if main is None:
        main = max((a for _, a in arrays), key=lambda a: a.size)
    tags["compressor"] = entry(str(main.compressor) if main.compressor is not None else "none")
    voxel_size, unit = multiscale_spacing or _array_spacing(dict(main.attrs) or dict(root.attrs), main.ndim)
    return VolumeInfo("Zarr", tuple(main.shape), main.dtype.name, voxel_size, unit, tags)


def _ome_level0(attrs: dict) -> tuple[str | None, tuple[tuple[float, ...], str] | None]:
    """Path and spatial scale of the full-resolution level of an OME-NGFF multiscale."""
    try:
        multiscale = attrs["multiscales"][0]
        level = multiscale["datasets"][0]
        spatial = [i for i, ax in enumerate(multiscale["axes"]) if ax.get("type") == "space"]
        scale = next(t["scale"] for t in level["coordinateTransformations"] if t["type"] == "scale")
        unit = _unit_alias(multiscale["axes"][spatial[-1]].get("unit", ""))
        return level["path"], (tuple(float(scale[i]) for i in spatial), unit)
    except (KeyError, IndexError, TypeError, StopIteration):
        return None, None
