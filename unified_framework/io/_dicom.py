"""DICOM: a folder holding one series of 2D slices, or a single (2D or multi-frame) file.

Reading sorts slices along the slice normal computed from ImagePositionPatient and
ImageOrientationPatient (InstanceNumber when positions are missing), applies
RescaleSlope/RescaleIntercept, and takes the voxel size from PixelSpacing and the
distance between slice positions (millimetres in DICOM, micrometres here). The output
type is the smallest one that holds every rescaled value the stored bits allow.

Writing produces an uncompressed series (explicit VR little endian) with fresh study,
series, frame-of-reference and instance UIDs: CT Image Storage for 16-bit data and
Secondary Capture Image Storage (with the image-plane attributes) for 8-bit data.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ._common import from_micrometres, to_micrometres
from .formats import DICOM_SLICE_SUFFIXES, folder_slices, library_errors, suffix_of
from .volume import Volume, check_memory, check_ndim, iter_slabs

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
# Descriptive, non-identifying attributes kept in Volume.metadata.
_KEPT = (
    "Modality", "Manufacturer", "ManufacturerModelName", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "SeriesDescription", "StudyDescription", "StudyDate", "SeriesNumber", "BodyPartExamined",
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "PhotometricInterpretation", "KVP", "ConvolutionKernel",
)
_INT_TYPES = [np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64")]


# ----------------------------------------------------------------------------- reading
def read_dicom(path: Path, dataset: str | None, lazy: bool, expect_ndim: Any) -> Volume:
    """Read a DICOM series folder or a single DICOM file."""
    if path.is_file():
        return _read_file(path, lazy, expect_ndim)
    return _read_series(path, lazy, expect_ndim)


def _read_file(path: Path, lazy: bool, expect_ndim: Any) -> Volume:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    _check_grey(path, header)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    shape = (frames, int(header.Rows), int(header.Columns)) if frames > 1 else (int(header.Rows), int(header.Columns))
    check_ndim(shape, expect_ndim, str(path))
    dtype = _rescaled_dtype(header)
    pixel = _pixel_spacing(header)
    spacing = pixel if frames == 1 else (_thickness(header),) + pixel
    if lazy:
        import dask
        import dask.array as da

        data = da.from_delayed(dask.delayed(_read_pixels)(path, dtype), shape, dtype)
    else:
        check_memory(shape, dtype, str(path))
        data = _read_pixels(path, dtype)
    return Volume(data, spacing, {"tags": _tags(header)}, path)


def _read_series(path: Path, lazy: bool, expect_ndim: Any) -> Volume:
    import pydicom

    files = folder_slices(path, DICOM_SLICE_SUFFIXES)
    if not files:
        raise InputError(f"{path}: folder holds no *.dcm slices; expected a DICOM series folder")
    headers = []
    for file in tqdm(files, desc=f"scanning {path.name}", unit="file", disable=None, leave=False):
        with library_errors(file, "dicom"):
            headers.append((file, pydicom.dcmread(file, stop_before_pixels=True)))
    series = {}
    for file, header in headers:
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((file, header))
    if len(series) > 1:
        listing = ", ".join(f"{uid or '(none)'} ({len(items)} files)" for uid, items in series.items())
        raise InputError(f"{path}: folder mixes {len(series)} DICOM series ({listing}); expected one series per folder")
    first_file, first = headers[0]
    _check_grey(first_file, first)
    rows, cols = int(first.Rows), int(first.Columns)
    for file, header in headers:
        if int(header.get("NumberOfFrames", 1) or 1) != 1:
            raise InputError(f"{file}: multi-frame file inside a series folder; expected one 2D slice per file")
        if (int(header.Rows), int(header.Columns)) != (rows, cols):
            raise InputError(
                f"{path}: slice {file.name} is {header.Rows}x{header.Columns} but {first_file.name} is "
                f"{rows}x{cols}; expected slices of equal shape"
            )
    check_ndim((len(headers), rows, cols), expect_ndim, str(path))
    headers, z_spacing = _sort(headers)
    dtype = np.result_type(*[_rescaled_dtype(h) for _, h in headers])
    spacing = (z_spacing,) + _pixel_spacing(first)
    ordered = [file for file, _ in headers]
    if lazy:
        import dask
        import dask.array as da

        read = dask.delayed(_read_pixels)
        data = da.stack([da.from_delayed(read(f, dtype), (rows, cols), dtype) for f in ordered])
    else:
        check_memory((len(ordered), rows, cols), dtype, str(path))
        data = np.empty((len(ordered), rows, cols), dtype)
        for index, file in enumerate(tqdm(ordered, desc=f"reading {path.name}", unit="slice", disable=None, leave=False)):
            data[index] = _read_pixels(file, dtype)
    metadata = {"tags": _tags(headers[0][1]), "slices": len(ordered), "files": [f.name for f in ordered[:3]]}
    return Volume(data, spacing, metadata, path)


def _check_grey(path: Path, header: Any) -> None:
    for keyword in ("Rows", "Columns"):
        if keyword not in header:
            raise InputError(f"{path}: DICOM file has no {keyword}; expected an image")
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{path}: DICOM image has {header.SamplesPerPixel} samples per pixel; expected greyscale")


def _read_pixels(file: Path, dtype: np.dtype) -> np.ndarray:
    """Pixels of one file with RescaleSlope/RescaleIntercept applied, as ``dtype``."""
    import pydicom

    with library_errors(file, "dicom"):
        ds = pydicom.dcmread(file)
        pixels = ds.pixel_array
    slope, intercept = _rescale(ds)
    if slope == 1 and intercept == 0:
        return pixels.astype(dtype, copy=False)
    if np.issubdtype(dtype, np.integer):
        return pixels.astype(dtype) * dtype.type(int(slope)) + dtype.type(int(intercept))
    return (pixels.astype(dtype) * dtype.type(slope) + dtype.type(intercept)).astype(dtype, copy=False)


def _rescale(ds: Any) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return slope, intercept


def _rescaled_dtype(ds: Any) -> np.dtype:
    """Smallest type holding every rescaled value of the stored bit range."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    allocated = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    slope, intercept = _rescale(ds)
    if slope == 1 and intercept == 0:
        return np.dtype(f"{'int' if signed else 'uint'}{allocated}")
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = (lo * slope + intercept, hi * slope + intercept)
    if slope.is_integer() and intercept.is_integer():
        for dtype in _INT_TYPES:
            info = np.iinfo(dtype)
            if info.min <= min(ends) and max(ends) <= info.max:
                return dtype
    return np.dtype(np.float32 if bits <= 16 else np.float64)


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    """(row spacing, column spacing) = (y, x) in micrometres; 1.0 if absent."""
    value = ds.get("PixelSpacing")
    if value is None:
        try:  # enhanced multi-frame objects keep it in the shared functional groups
            value = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            value = ds.get("ImagerPixelSpacing")
    if value is None or len(value) != 2:
        return 1.0, 1.0
    return tuple(to_micrometres(str(v), "mm") for v in value)


def _thickness(ds: Any) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return to_micrometres(str(value), "mm")
    return 1.0


def _sort(headers: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], float]:
    """Order slices along the slice normal; return them and the slice distance in µm."""
    have_geometry = all("ImagePositionPatient" in h and "ImageOrientationPatient" in h for _, h in headers)
    if have_geometry:
        orientation = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        positions = [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal)) for _, h in headers]
        order = np.argsort(positions, kind="stable")
        headers = [headers[i] for i in order]
        distances = np.sort(positions)
        if len(headers) > 1:
            step = (distances[-1] - distances[0]) / (len(headers) - 1)
            if step > 0:
                # 12 significant digits drop the float noise of the dot product.
                return headers, to_micrometres(f"{step:.12g}", "mm")
    elif all("InstanceNumber" in h for _, h in headers):
        headers = sorted(headers, key=lambda item: int(item[1].InstanceNumber))
    return headers, _thickness(headers[0][1])


def _tags(ds: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return float(value) if isinstance(value, float) else int(value) if isinstance(value, int) else str(value)

    tags = {}
    for keyword in _KEPT:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        is_list = hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
        tags[keyword] = [plain(v) for v in value] if is_list else plain(value)
    return tags


# ----------------------------------------------------------------------------- writing
def _ds(value: Decimal) -> str:
    """A Decimal String (at most 16 characters) for a length in millimetres."""
    from pydicom.valuerep import format_number_as_ds

    text = format(value.normalize(), "f")
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def write_dicom(path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str) -> None:
    """Write a series folder (``slice_00000.dcm`` ...), or one file for a 2D image named ``*.dcm``."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    data = volume.data
    single_file = suffix_of(path) == ".dcm"
    if single_file and data.ndim != 2:
        raise InputError(f"{name}: a {data.ndim}D volume is written as a DICOM series folder; expected a folder path (no .dcm) with format 'dicom'")
    if data.ndim == 2:
        data = data[None]
        spacing = (Decimal(1),) + tuple(from_micrometres(s, "mm") for s in volume.spacing)
    else:
        spacing = tuple(from_micrometres(s, "mm") for s in volume.spacing)
    dtype = np.dtype(data.dtype)
    sop_class = CT_IMAGE_STORAGE if dtype.itemsize == 2 else SECONDARY_CAPTURE_IMAGE_STORAGE
    now = datetime.datetime.now()

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anonymous", "MDLMA", "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.SeriesNumber, ds.AcquisitionNumber = 1, 1
    ds.SeriesDescription = str(volume.metadata.get("description", "written by mdlma unified framework"))[:64]
    ds.Manufacturer = "MDLMA unified framework"
    ds.PositionReferenceIndicator = ""
    if sop_class == CT_IMAGE_STORAGE:
        ds.Modality, ds.ImageType, ds.KVP = "CT", ["DERIVED", "SECONDARY", "AXIAL"], ""
    else:
        ds.Modality, ds.ImageType, ds.ConversionType = "OT", ["DERIVED", "SECONDARY"], "WSD"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(spacing[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[2])
    ds.BitsAllocated = ds.BitsStored = 8 * dtype.itemsize
    ds.HighBit = 8 * dtype.itemsize - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"

    if not single_file:
        path.mkdir()
    width = max(5, len(str(data.shape[0] - 1)))
    for start, _, block in iter_slabs(data, desc=f"writing {name}"):
        for offset, image in enumerate(block):
            index = start + offset
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = index + 1
            z = _ds(spacing[0] * index)
            ds.ImagePositionPatient = ["0", "0", z]
            ds.SliceLocation = z
            ds.PixelData = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<")).tobytes()
            ds.save_as(path if single_file else path / f"slice_{index:0{width}d}.dcm", enforce_file_format=True)


