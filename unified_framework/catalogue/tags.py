"""The format's descriptive tags of a catalogued volume, as SciCat scientific metadata.

:mod:`unified_framework.io` reads and checks the volume (format, shape, dtype, voxel
size, geometry: see :func:`.extract.extract_dataset`); this module only adds what the
catalogue keeps besides: the tags a scientist searches by, each as an entry
``{"value": ..., "unit": ...}``.

* DICOM: acquisition and series tags with their units (``KVP`` in kV, ``EchoTime`` in
  ms, ...). Patient identification (name, ID, birth date, ...) is deliberately never
  copied: catalogues are shared, patient data must not leak into them.
* TIFF: baseline tags and ImageJ metadata of the first page.
* HDF5/NeXus: the group tree, small datasets as values with their ``units`` attribute
  (``entry/instrument/source/energy = 25 keV``), large ones as shape and dtype.
* NIfTI: header fields.
* Zarr: attributes (OME-NGFF ``multiscales`` included) and every array's layout.

Only headers are read, and only of files :mod:`unified_framework.io` has already opened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import Volume
from ..io._common import jsonable
from ..io.formats import DICOM_SLICE_SUFFIXES, TIFF_SLICE_SUFFIXES, folder_slices, library_errors

#: Scientific-metadata key holding each io format's tags (a TIFF file and a folder of
#: TIFF slices carry the same tags).
TAG_GROUPS = {
    "dicom": "dicom",
    "tiff": "tiff",
    "tiff-folder": "tiff",
    "hdf5": "hdf5",
    "nifti": "nifti",
    "zarr": "zarr",
}
_MAX_ENTRIES = 2000  # metadata entries per file: enough for NeXus, bounded for odd files
_MAX_STRING = 1000  # characters kept of long strings (descriptions, XML)
_MAX_ITEMS = 64  # list entries kept (longer lists are arrays, not tags)


def entry(value: Any, unit: str = "") -> dict:
    """A SciCat scientific-metadata entry ``{"value": value, "unit": unit}``.

    Examples
    --------
    >>> entry(25.0, "keV")
    {'value': 25.0, 'unit': 'keV'}
    """
    return {"value": value, "unit": unit}


def plain(value: Any) -> Any:
    """A header value as a bounded JSON scalar or flat list; None if it is neither.

    Conversion of NumPy scalars, bytes and small arrays is :func:`unified_framework.io`'s
    (``jsonable``); on top, strings are stripped and cut to 1000 characters and lists
    longer than 64 items or holding objects are left out, so that one odd attribute
    cannot bloat the catalogue's index.

    Examples
    --------
    >>> import numpy as np
    >>> plain(np.float32(0.5)), plain(b"P05\\x00"), plain(np.zeros(100))
    (0.5, 'P05', None)
    """
    value = jsonable(value)
    if isinstance(value, str):
        return value.strip()[:_MAX_STRING]
    if isinstance(value, list):
        flat = len(value) <= _MAX_ITEMS and all(
            isinstance(v, (bool, int, float, str)) for v in value
        )
        return value if flat else None
    return None if isinstance(value, dict) else value


def safe_key(name: str) -> str:
    """Make a header name usable as a metadata key (letters, digits, ``_`` and ``-``).

    Examples
    --------
    >>> safe_key("energy (keV)")
    'energy_keV'
    """
    key = re.sub(r"[^\w\-]+", "_", str(name)).strip("_")
    return key if key and key[0] != "-" else f"_{key}"


def format_tags(volume: Volume) -> tuple[str, dict]:
    """The metadata key and the descriptive tags of a volume read by :mod:`unified_framework.io`.

    Parameters
    ----------
    volume : Volume
        From :func:`unified_framework.io.open_volume`: its ``path`` and
        ``metadata["format"]`` (and, for HDF5 and Zarr, ``metadata["dataset"]``) say
        which file and array to describe.

    Returns
    -------
    (str, dict)
        The key (:data:`TAG_GROUPS`) and nested dicts whose leaves are ``{"value", "unit"}``.

    Raises
    ------
    InputError
        If a header cannot be read (one line naming the file).

    Examples
    --------
    >>> from unified_framework.io import open_volume
    >>> group, tags = format_tags(open_volume("scan.nxs"))     # doctest: +SKIP
    >>> group, tags["entry"]["instrument"]["source"]["energy"]  # doctest: +SKIP
    ('hdf5', {'value': 25.0, 'unit': 'keV'})
    """
    fmt = volume.metadata["format"]
    path = Path(volume.path or "")
    with library_errors(path, fmt):
        return TAG_GROUPS[fmt], _READERS[fmt](volume, path)


# --- DICOM -----------------------------------------------------------------------------

# keyword -> unit. Patient identification is left out on purpose (see module docstring).
_DICOM_TAGS = {
    "Modality": "",
    "Manufacturer": "",
    "ManufacturerModelName": "",
    "SoftwareVersions": "",
    "StudyDate": "",
    "SeriesDate": "",
    "AcquisitionDate": "",
    "StudyDescription": "",
    "SeriesDescription": "",
    "SeriesNumber": "",
    "SeriesInstanceUID": "",
    "StudyInstanceUID": "",
    "SOPClassUID": "",
    "BodyPartExamined": "",
    "ImageType": "",
    "Rows": "",
    "Columns": "",
    "NumberOfFrames": "",
    "BitsAllocated": "",
    "BitsStored": "",
    "HighBit": "",
    "PixelRepresentation": "",
    "SamplesPerPixel": "",
    "PhotometricInterpretation": "",
    "RescaleSlope": "",
    "RescaleIntercept": "",
    "RescaleType": "",
    "PixelSpacing": "mm",
    "SliceThickness": "mm",
    "SpacingBetweenSlices": "mm",
    "KVP": "kV",
    "XRayTubeCurrent": "mA",
    "ExposureTime": "ms",
    "ConvolutionKernel": "",
    "MagneticFieldStrength": "T",
    "RepetitionTime": "ms",
    "EchoTime": "ms",
    "FlipAngle": "deg",
    "ImageOrientationPatient": "",
}


def _dicom_value(value: Any) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)):
        return plain([_dicom_value(v) for v in value])
    if isinstance(value, (int, float, bytes, str)):  # pydicom's IS and DS are int and float
        return plain(value)
    return plain(str(value))


def _dicom_tags(volume: Volume, path: Path) -> dict:
    import pydicom

    # These tags describe the series, so any of its slices (io checked them all) will do.
    first = path if path.is_file() else folder_slices(path, DICOM_SLICE_SUFFIXES)[0]
    header = pydicom.dcmread(first, stop_before_pixels=True)
    tags = {}
    for keyword, unit in _DICOM_TAGS.items():
        if header.get(keyword) not in (None, ""):
            value = _dicom_value(header.get(keyword))
            if value is not None:
                tags[keyword] = entry(value, unit)
    if getattr(header, "file_meta", None) is not None and "TransferSyntaxUID" in header.file_meta:
        tags["TransferSyntaxUID"] = entry(str(header.file_meta.TransferSyntaxUID))
    return tags


# --- TIFF ------------------------------------------------------------------------------

_TIFF_TAGS = (
    "ImageWidth",
    "ImageLength",
    "BitsPerSample",
    "SamplesPerPixel",
    "SampleFormat",
    "Compression",
    "Predictor",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "XResolution",
    "YResolution",
    "ResolutionUnit",
    "TileWidth",
    "TileLength",
    "Software",
    "DateTime",
    "Artist",
    "Make",
    "Model",
    "ImageDescription",
)


def _tiff_tag_value(tag: Any) -> Any:
    value = tag.value
    if hasattr(value, "name") and not isinstance(value, (str, bytes)):  # enums: searchable names
        return value.name
    if tag.name in ("XResolution", "YResolution") and isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None  # pixels per resolution unit
    return plain(value)


def _tiff_tags(volume: Volume, path: Path) -> dict:
    import tifffile

    first = path if path.is_file() else folder_slices(path, TIFF_SLICE_SUFFIXES)[0]
    with tifffile.TiffFile(first) as tif:
        page = tif.pages.first
        tags: dict[str, Any] = {}
        for name in _TIFF_TAGS:
            tag = page.tags.get(name)
            if tag is not None and (value := _tiff_tag_value(tag)) is not None:
                tags[name] = entry(value)
        tags["NumberOfPages"] = entry(len(tif.pages))
        for key, value in (tif.imagej_metadata or {}).items():
            if (value := plain(value)) is not None and not isinstance(value, list):
                tags.setdefault("imagej", {})[safe_key(key)] = entry(value)
    return tags


# --- HDF5 / NeXus ----------------------------------------------------------------------


def _hdf5_units(attrs: Any) -> str:
    for name in ("units", "unit"):
        if name in attrs:
            return str(plain(attrs[name]) or "")
    return ""


def _hdf5_tags(volume: Volume, path: Path) -> dict:
    import h5py

    tags: dict = {}
    count = 0
    with h5py.File(path, "r") as handle:

        def node_for(name: str) -> dict:
            node = tags
            for part in name.split("/")[:-1]:
                node = node.setdefault(safe_key(part), {})
            return node

        def add_attrs(node: dict, attrs: Any, skip: tuple = ("units", "unit")) -> None:
            for key in attrs:
                if key not in skip and (value := plain(attrs[key])) is not None:
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

        add_attrs(tags, handle.attrs)
        handle.visititems(visit)
    if count > _MAX_ENTRIES:
        tags["truncated_entries"] = entry(count - _MAX_ENTRIES)
    # The array io chose (named, NeXus default signal, or the only image): what jobs read.
    tags["volume_dataset"] = entry(volume.metadata["dataset"])
    return tags


# --- NIfTI -----------------------------------------------------------------------------

_NIFTI_FIELDS = (
    "sizeof_hdr",
    "dim",
    "pixdim",
    "datatype",
    "bitpix",
    "intent_code",
    "intent_name",
    "qform_code",
    "sform_code",
    "scl_slope",
    "scl_inter",
    "cal_min",
    "cal_max",
    "slice_duration",
    "toffset",
    "xyzt_units",
    "descrip",
    "aux_file",
)


def _nifti_tags(volume: Volume, path: Path) -> dict:
    import nibabel

    header: Any = nibabel.load(path).header  # a Nifti1/2Header (nibabel types it as its base)
    tags = {}
    for name in _NIFTI_FIELDS:
        if name in header and (value := plain(header[name])) not in (None, ""):
            tags[name] = entry(value)
    space_unit, time_unit = header.get_xyzt_units()
    tags["space_unit"] = entry(space_unit)
    tags["time_unit"] = entry(time_unit)
    tags["datatype_name"] = entry(header.get_data_dtype().name)  # on disk, before scl_slope
    return tags


# --- Zarr ------------------------------------------------------------------------------


def _zarr_attrs(attrs: dict) -> dict:
    """JSON attributes as metadata entries; ``{"value", "unit"}`` objects kept as they are."""
    out: dict[str, Any] = {}
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


def _zarr_tags(volume: Volume, path: Path) -> dict:
    import zarr

    root = zarr.open(str(path), mode="r")
    tags = _zarr_attrs(dict(root.attrs))
    if isinstance(root, zarr.Array):
        main = root
    else:
        for name, array in root.arrays(recurse=True):
            node = tags
            for part in name.split("/"):
                node = node.setdefault(safe_key(part), {})
            node.update(_zarr_attrs(dict(array.attrs)))
            node["shape"] = entry(list(array.shape))
            node["dtype"] = entry(array.dtype.name)
            node["chunks"] = entry(list(array.chunks))
        # The array io chose (OME-Zarr: level 0, or the one named): what jobs read.
        tags["volume_dataset"] = entry(volume.metadata["dataset"])
        main = root[volume.metadata["dataset"].strip("/")]
    tags["compressor"] = entry(str(main.compressor) if main.compressor is not None else "none")
    return tags


_READERS: dict[str, Callable[[Volume, Path], dict]] = {
    "dicom": _dicom_tags,
    "tiff": _tiff_tags,
    "tiff-folder": _tiff_tags,
    "hdf5": _hdf5_tags,
    "nifti": _nifti_tags,
    "zarr": _zarr_tags,
}
