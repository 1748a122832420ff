"""DICOM: a folder holding one series of 2D slices, or a single (2D or multi-frame) file.

Reading sorts slices (files of a series, frames of a multi-frame file) along the slice
normal computed from ImagePositionPatient and ImageOrientationPatient (InstanceNumber
when positions are missing), applies RescaleSlope/RescaleIntercept, and takes the
geometry from PixelSpacing, ImageOrientationPatient and the slice positions: per file,
per frame (enhanced multi-frame functional groups) or ImagePositionPatient plus
GridFrameOffsetVector (RT dose); SpacingBetweenSlices/SliceThickness only where no
positions say more. DICOM's patient frame (LPS, millimetres) is the framework's world
frame, listed (z, y, x) in micrometres (:mod:`.geometry`). The output type is the
smallest one that holds every rescaled value the stored bits allow.

Writing produces an uncompressed series (explicit VR little endian) with fresh study,
series and instance UIDs and ImagePositionPatient/ImageOrientationPatient from the
volume's geometry. The storage class follows the source's Modality (kept in
``metadata["dicom"]`` with SliceThickness, FrameOfReferenceUID and the acquisition
tags the class needs): CT Image Storage for CT, MR Image Storage for MR (16-bit data),
Secondary Capture (with the image-plane attributes) for other modalities and 8-bit
data. Without a DICOM source, 16-bit data is written as CT, other data as Secondary
Capture.
"""

from __future__ import annotations

import datetime
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ._common import exact_decimal, from_micrometres, to_micrometres
from .formats import DICOM_SLICE_SUFFIXES, folder_slices, library_errors, suffix_of
from .volume import Volume, check_memory, check_ndim, iter_slabs

logger = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
#: Single-frame storage classes the writer fills, by source Modality (16-bit data only).
_STORAGE_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
#: Acquisition tags copied into written files when the source had them.
_ACQUISITION = (
    "BodyPartExamined",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "RepetitionTime",
    "EchoTime",
    "EchoTrainLength",
    "MagneticFieldStrength",
    "ImagingFrequency",
)
#: Kept in ``metadata["dicom"]`` and written back: what the acquisition was, not where pixels lie.
_CARRIED = ("Modality", "SOPClassUID", "SliceThickness", "FrameOfReferenceUID") + _ACQUISITION
#: Type 1 attributes of the MR Image module, for MR sources that lack them (enhanced MR).
_MR_DEFAULTS = {"ScanningSequence": "RM", "SequenceVariant": "NONE"}
# Descriptive, non-identifying attributes kept in Volume.metadata.
_KEPT = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SeriesDescription",
    "StudyDescription",
    "StudyDate",
    "SeriesNumber",
    "BodyPartExamined",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "KVP",
    "ConvolutionKernel",
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
    shape = (
        (frames, int(header.Rows), int(header.Columns))
        if frames > 1
        else (int(header.Rows), int(header.Columns))
    )
    check_ndim(shape, expect_ndim, str(path))
    dtype = _rescaled_dtype(header)
    measures = _frame_item(header, "PixelMeasuresSequence")
    # Enhanced multi-frame objects keep PixelSpacing in the (shared) pixel measures.
    pixel = _pixel_spacing(
        measures if measures is not None and "PixelSpacing" in measures else header
    )
    thickness = (_thickness(measures) if measures is not None else None) or _thickness(header)
    orientation_item = _frame_item(header, "PlaneOrientationSequence")
    orientation = (orientation_item if orientation_item is not None else header).get(
        "ImageOrientationPatient"
    )
    order, step, origin, direction = _geometry(
        path, _frame_positions(header, frames), orientation, thickness or 1.0
    )
    spacing = pixel if frames == 1 else (step,) + pixel
    if lazy:
        import dask
        import dask.array as da

        data = da.from_delayed(dask.delayed(_read_pixels)(path, dtype), shape, dtype)
    else:
        check_memory(shape, dtype, str(path))
        data = _read_pixels(path, dtype)
    if order is not None and frames > 1 and list(order) != list(range(frames)):
        data = data[np.asarray(order)]  # frames stored out of position order
    metadata: dict[str, Any] = {
        "spacing_known": _has_pixel_spacing(
            measures if measures is not None and "PixelSpacing" in measures else header
        ),
        "tags": _tags(header),
        "dicom": _carried(header, measures),
    }
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if (
        syntax is not None
        and syntax.is_transfer_syntax
        and not syntax.is_little_endian
        and dtype.itemsize > 1
    ):
        metadata["byte_order"] = "big-endian"  # pydicom hands the pixels over in native order
    return Volume(data, spacing, metadata, path, origin, direction)


def _frame_item(header: Any, sequence: str) -> Any:
    """Item of a functional group ``sequence`` (shared groups, else the first frame's); None if absent."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            return getattr(header, groups)[0][sequence][0]
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
    return None


def _frame_positions(header: Any, frames: int) -> list[Any] | None:
    """ImagePositionPatient of every frame (mm, LPS); None if the file does not say."""
    try:  # enhanced multi-frame: one Plane Position item per frame
        per_frame = header.PerFrameFunctionalGroupsSequence
        positions = [item.PlanePositionSequence[0].ImagePositionPatient for item in per_frame]
        if len(positions) == frames:
            return positions
    except (AttributeError, IndexError, KeyError, TypeError):
        pass
    position = header.get("ImagePositionPatient")
    if position is None:
        position = getattr(
            _frame_item(header, "PlanePositionSequence"), "ImagePositionPatient", None
        )
    if position is None:
        return None
    offsets = header.get("GridFrameOffsetVector")
    orientation = header.get("ImageOrientationPatient")
    if frames > 1 and offsets is not None and len(offsets) == frames and orientation is not None:
        # RT dose: offsets along the normal, relative to the first frame (C.8.8.3.2).
        normal = _normal(orientation)
        start = np.asarray(position, dtype=float)
        return [start + (float(g) - float(offsets[0])) * normal for g in offsets]
    return [position]


def _normal(orientation: Any) -> np.ndarray:
    """Unit slice normal of ImageOrientationPatient (NaN for zero cosines: refused as a direction later)."""
    cosines = np.asarray(orientation, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        row, column = (
            cosines[:3] / np.linalg.norm(cosines[:3]),
            cosines[3:] / np.linalg.norm(cosines[3:]),
        )
    return np.cross(row, column)


def _geometry(
    path: Path, positions: list[Any] | None, orientation: Any, thickness: float
) -> tuple[Any, float, Any, Any]:
    """``(order, slice step µm, origin, direction)`` from slice positions and orientation.

    ``order`` sorts the slices along the normal (None when positions are missing).
    One position, or none, takes ``thickness`` as the slice step along the normal.
    Origin and direction are None (the defaults) when the file gives no orientation.
    """
    if orientation is None or len(orientation) != 6:
        return None, thickness, None, None
    cosines = np.asarray(orientation, dtype=float)
    row, column = cosines[:3], cosines[3:]
    normal = _normal(orientation)
    step_um, step_vector, order, origin = thickness, normal, None, None
    if positions is not None:
        points = np.asarray([[float(v) for v in p] for p in positions])
        order = np.argsort(points @ normal, kind="stable")
        first = positions[int(order[0])]
        origin = tuple(to_micrometres(str(v), "mm") for v in first)[::-1]
        if len(points) > 1:
            sorted_points = points[order]
            span = (sorted_points[-1] - sorted_points[0]) / (len(points) - 1)
            length = float(np.linalg.norm(span))
            if length > 0:
                # 12 significant digits drop the float noise of the arithmetic.
                step_um, step_vector = to_micrometres(f"{length:.12g}", "mm"), span / length
                expected = sorted_points[0] + np.arange(len(points))[:, None] * span
                deviation = float(np.abs(sorted_points - expected).max())
                if deviation > 0.01 * length:
                    logger.warning(
                        "%s: slice positions deviate up to %.3g mm from an even grid; using the mean step %.6g mm",
                        path,
                        deviation,
                        length,
                    )
    # LPS columns for index x, y, z; ours lists rows and columns reversed (z, y, x).
    direction = np.column_stack([step_vector, column, row])[::-1]
    return order, step_um, origin, direction


def _read_series(path: Path, lazy: bool, expect_ndim: Any) -> Volume:
    import pydicom

    files = folder_slices(path, DICOM_SLICE_SUFFIXES)
    if not files:
        raise InputError(f"{path}: folder holds no *.dcm slices; expected a DICOM series folder")
    headers = []
    for file in tqdm(files, desc=f"scanning {path.name}", unit="file", disable=None, leave=False):
        with library_errors(file, "dicom"):
            headers.append((file, pydicom.dcmread(file, stop_before_pixels=True)))
    series: dict[str, list[tuple[Path, Any]]] = {}
    for file, header in headers:
        series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((file, header))
    if len(series) > 1:
        listing = ", ".join(
            f"{uid or '(none)'} ({len(items)} files)" for uid, items in series.items()
        )
        raise InputError(
            f"{path}: folder mixes {len(series)} DICOM series ({listing}); expected one series per folder"
        )
    first_file, first = headers[0]
    _check_grey(first_file, first)
    rows, cols = int(first.Rows), int(first.Columns)
    for file, header in headers:
        if int(header.get("NumberOfFrames", 1) or 1) != 1:
            raise InputError(
                f"{file}: multi-frame file inside a series folder; expected one 2D slice per file"
            )
        if (int(header.Rows), int(header.Columns)) != (rows, cols):
            raise InputError(
                f"{path}: slice {file.name} is {header.Rows}x{header.Columns} but {first_file.name} is "
                f"{rows}x{cols}; expected slices of equal shape"
            )
    check_ndim((len(headers), rows, cols), expect_ndim, str(path))
    with_positions = all("ImagePositionPatient" in h for _, h in headers)
    positions = [h.ImagePositionPatient for _, h in headers] if with_positions else None
    order, z_spacing, origin, direction = _geometry(
        path, positions, first.get("ImageOrientationPatient"), _thickness(first) or 1.0
    )
    if order is not None:
        headers = [headers[i] for i in order]
    elif all("InstanceNumber" in h for _, h in headers):
        headers = sorted(headers, key=lambda item: int(item[1].InstanceNumber))
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
        for index, file in enumerate(
            tqdm(ordered, desc=f"reading {path.name}", unit="slice", disable=None, leave=False)
        ):
            data[index] = _read_pixels(file, dtype)
    metadata = {
        "spacing_known": _has_pixel_spacing(first),
        "tags": _tags(headers[0][1]),
        "dicom": _carried(headers[0][1]),
        "slices": len(ordered),
        "files": [f.name for f in ordered[:3]],
    }
    return Volume(data, spacing, metadata, path, origin, direction)


def _check_grey(path: Path, header: Any) -> None:
    for keyword in ("Rows", "Columns"):
        if keyword not in header:
            raise InputError(f"{path}: DICOM file has no {keyword}; expected an image")
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise InputError(
            f"{path}: DICOM image has {header.SamplesPerPixel} samples per pixel; expected greyscale"
        )


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
    return (pixels.astype(dtype) * dtype.type(slope) + dtype.type(intercept)).astype(
        dtype, copy=False
    )


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


def _has_pixel_spacing(ds: Any) -> bool:
    value = ds.get("PixelSpacing")
    if value is None:
        value = ds.get("ImagerPixelSpacing")
    return value is not None and len(value) == 2


def _pixel_spacing(ds: Any) -> tuple[float, float]:
    """(row spacing, column spacing) = (y, x) in micrometres; 1.0 if absent."""
    value = ds.get("PixelSpacing")
    if value is None:
        value = ds.get("ImagerPixelSpacing")
    if value is None or len(value) != 2:
        return 1.0, 1.0
    row, col = (to_micrometres(str(v), "mm") for v in value)
    return row, col


def _thickness(ds: Any) -> float | None:
    """SpacingBetweenSlices, else SliceThickness, in µm; None if neither is set."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return to_micrometres(str(value), "mm")
    return None


def _plain(value: Any) -> Any:
    return (
        float(value)
        if isinstance(value, float)
        else int(value)
        if isinstance(value, int)
        else str(value)
    )


def _carried(ds: Any, measures: Any = None) -> dict[str, Any]:
    """The :data:`_CARRIED` tags (SliceThickness of enhanced files from their pixel measures)."""
    carried = _tags(ds, _CARRIED)
    if (
        "SliceThickness" not in carried
        and measures is not None
        and measures.get("SliceThickness") not in (None, "")
    ):
        carried["SliceThickness"] = float(measures.SliceThickness)
    return carried


def _tags(ds: Any, keywords: tuple[str, ...] = _KEPT) -> dict[str, Any]:
    tags = {}
    for keyword in keywords:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        is_list = hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
        tags[keyword] = [_plain(v) for v in value] if is_list else _plain(value)
    return tags


# ----------------------------------------------------------------------------- writing
def _ds(value: Decimal) -> str:
    """A Decimal String (at most 16 characters) for a length in millimetres."""
    from pydicom.valuerep import format_number_as_ds

    text = format(value.normalize(), "f")
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _storage_class(carried: dict[str, Any], dtype: np.dtype) -> tuple[str, str]:
    """``(SOP class UID, Modality)`` for data of ``dtype`` from a source with ``carried`` tags."""
    modality = str(carried.get("Modality") or "")
    if modality:
        storage = _STORAGE_BY_MODALITY.get(modality)
        return (
            (storage, modality)
            if storage and dtype.itemsize == 2
            else (SECONDARY_CAPTURE_IMAGE_STORAGE, modality)
        )
    return (
        (CT_IMAGE_STORAGE, "CT") if dtype.itemsize == 2 else (SECONDARY_CAPTURE_IMAGE_STORAGE, "OT")
    )


def _cosines(vector: Any) -> list[str]:
    from pydicom.valuerep import format_number_as_ds

    return [format_number_as_ds(float(v)) if v != int(v) else str(int(v)) for v in vector]


def write_dicom(
    path: Path, volume: Volume, dataset: str | None, chunks: tuple[int, ...] | None, name: str
) -> None:
    """Write a series folder (``slice_00000.dcm`` ...), or one file for a 2D image named ``*.dcm``."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
    from pydicom.valuerep import format_number_as_ds

    data = volume.data
    single_file = suffix_of(path) == ".dcm"
    if single_file and data.ndim != 2:
        raise InputError(
            f"{name}: a {data.ndim}D volume is written as a DICOM series folder; expected a folder path (no .dcm) with format 'dicom'"
        )
    stored = volume.metadata.get("dicom")
    carried: dict[str, Any] = stored if isinstance(stored, dict) else {}
    if data.ndim == 2:
        data = data[None]
        step = exact_decimal(carried.get("SliceThickness", 0)) * 1000 or Decimal(
            1000
        )  # µm; a 2D image's own thickness
        spacing = (step,) + tuple(exact_decimal(s) for s in volume.spacing)
    else:
        spacing = tuple(exact_decimal(s) for s in volume.spacing)
    spacing_mm = tuple(from_micrometres(s, "mm") for s in spacing)
    dtype = np.dtype(data.dtype)
    sop_class, modality = _storage_class(carried, dtype)
    now = datetime.datetime.now()

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Anonymous", "MDLMA", "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    # The same frame of reference: positions stay comparable with the source's.
    ds.FrameOfReferenceUID = str(carried.get("FrameOfReferenceUID") or generate_uid())
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.SeriesNumber, ds.AcquisitionNumber = 1, 1
    ds.SeriesDescription = str(
        volume.metadata.get("description", "written by mdlma unified framework")
    )[:64]
    ds.Manufacturer = "MDLMA unified framework"
    ds.PositionReferenceIndicator = ""
    ds.Modality = modality
    ds.ImageType = ["DERIVED", "SECONDARY"] + (["AXIAL"] if sop_class == CT_IMAGE_STORAGE else [])
    if sop_class == SECONDARY_CAPTURE_IMAGE_STORAGE:
        ds.ConversionType = "WSD"
    for keyword in _ACQUISITION:
        if keyword in carried:
            setattr(ds, keyword, carried[keyword])
    if sop_class == CT_IMAGE_STORAGE and "KVP" not in ds:
        ds.KVP = ""
    if sop_class == MR_IMAGE_STORAGE:
        for keyword, default in _MR_DEFAULTS.items():
            if keyword not in ds:
                setattr(ds, keyword, default)
    # LPS (x, y, z) vectors from the (z, y, x) direction: rows reversed.
    direction = np.asarray(volume.direction)[::-1]
    ds.ImageOrientationPatient = _cosines(direction[:, 2]) + _cosines(direction[:, 1])
    normal = np.cross(direction[:, 2], direction[:, 1])
    ds.PixelSpacing = [_ds(spacing_mm[1]), _ds(spacing_mm[2])]
    ds.SliceThickness = _ds(
        exact_decimal(carried["SliceThickness"]) if "SliceThickness" in carried else spacing_mm[0]
    )
    ds.SpacingBetweenSlices = _ds(spacing_mm[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = int(data.shape[1]), int(data.shape[2])
    ds.BitsAllocated = ds.BitsStored = 8 * dtype.itemsize
    ds.HighBit = 8 * dtype.itemsize - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"

    origin = [exact_decimal(v) for v in volume.origin[::-1]]  # LPS x, y, z in µm
    slice_step = [exact_decimal(v) * spacing[0] for v in direction[:, 0]]
    if not single_file:
        path.mkdir()
    width = max(5, len(str(data.shape[0] - 1)))
    for start, _, block in iter_slabs(data, desc=f"writing {name}"):
        for offset, image in enumerate(block):
            index = start + offset
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = index + 1
            # Decimal arithmetic: axis-aligned positions come out exact (no 0.30000000000000004).
            position = [from_micrometres(o + index * d, "mm") for o, d in zip(origin, slice_step)]
            ds.ImagePositionPatient = [_ds(p) for p in position]
            ds.SliceLocation = format_number_as_ds(
                float(np.dot([float(p) for p in position], normal))
            )
            ds.PixelData = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<")).tobytes()
            ds.save_as(
                path if single_file else path / f"slice_{index:0{width}d}.dcm",
                enforce_file_format=True,
            )
