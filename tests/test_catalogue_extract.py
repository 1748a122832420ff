"""Metadata extraction on files shipped by installed packages and on the project's phantom."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import nibabel
import numpy as np
import pydicom
import pytest
import tifffile
import zarr
from pydicom.data import get_testdata_file

from unified_framework.catalogue import (
    CONTENT_KEY,
    SQLiteCatalogue,
    Query,
    detect_format,
    extract_dataset,
    parse_condition,
    read_volume_info,
    to_si,
)
from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import write_volume

IDENTITY = {"owner": "Alice Doe", "owner_group": "p05", "contact_email": "alice@example.org"}
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
SKIMAGE_TIFF = Path(__import__("skimage").__file__).parent / "data" / "multipage.tif"
H5PY_STRINGS = Path(h5py.__file__).parent / "tests" / "data_files" / "vlen_string_dset.h5"


def _in_micrometres(info) -> list[float]:
    return [to_si(v, info.voxel_unit)[0] * 1e6 for v in info.voxel_size]


# --- files shipped by installed packages -------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_tags_from_pydicom_test_files(name):
    path = get_testdata_file(name)
    header = pydicom.dcmread(path)
    info = read_volume_info(path)
    tags = info.tags
    assert info.format == "DICOM"
    assert tags["Modality"]["value"] == header.Modality
    assert tags["Rows"]["value"] == header.Rows and tags["Columns"]["value"] == header.Columns
    assert tags["BitsAllocated"]["value"] == header.BitsAllocated
    assert tags["SeriesInstanceUID"]["value"] == str(header.SeriesInstanceUID)
    assert tags["PixelSpacing"] == {"value": [float(v) for v in header.PixelSpacing], "unit": "mm"}
    assert info.shape == header.pixel_array.shape and info.dtype == header.pixel_array.dtype.name
    assert info.voxel_size == tuple(float(v) for v in header.PixelSpacing) and info.voxel_unit == "mm"
    if "EchoTime" in header:
        assert tags["EchoTime"] == {"value": float(header.EchoTime), "unit": "ms"}


def test_dicom_patient_identity_is_not_catalogued():
    path = get_testdata_file("CT_small.dcm")
    header = pydicom.dcmread(path)
    text = json.dumps(extract_dataset(path, **IDENTITY).to_dict())
    for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
        value = str(header.get(keyword, "")).strip()
        assert keyword not in text
        if len(value) > 3:
            assert value not in text


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_nifti_header_from_nibabel_test_files(name):
    path = NIBABEL_DATA / name
    image = nibabel.load(path)
    info = read_volume_info(path)
    spatial = image.shape[:3]
    assert info.format == "NIfTI"
    assert info.shape[-3:] == tuple(reversed(spatial)) and len(info.shape) == len(image.shape)
    assert info.voxel_size == pytest.approx(tuple(reversed(image.header.get_zooms()[:3])), rel=1e-6)
    assert info.voxel_unit == {"mm": "mm", "unknown": "mm"}[image.header.get_xyzt_units()[0]]
    assert info.tags["dim"]["value"] == image.header["dim"].tolist()
    assert info.dtype == image.get_data_dtype().name
    if len(image.shape) == 4:
        time_unit = {"sec": "s", "msec": "ms", "usec": "us"}[image.header.get_xyzt_units()[1]]
        assert info.tags["repetition_time"] == {"value": pytest.approx(image.header.get_zooms()[3]), "unit": time_unit}


def test_tiff_tags_from_scikit_image_test_file():
    info = read_volume_info(SKIMAGE_TIFF)
    with tifffile.TiffFile(SKIMAGE_TIFF) as tif:
        page = tif.pages[0]
        assert info.shape == tif.series[0].shape
        assert info.tags["NumberOfPages"]["value"] == len(tif.pages)
        assert info.tags["ImageWidth"]["value"] == page.imagewidth
        assert info.tags["Compression"]["value"] == page.compression.name
    assert info.format == "TIFF" and info.dtype == "uint8"


def test_hdf5_without_image_array_is_rejected():
    with pytest.raises(InputError, match="no array with 2 or more dimensions"):
        read_volume_info(H5PY_STRINGS)


# --- the project's phantom in every format ------------------------------------------------

PHANTOM_SPACING = (5.0, 2.5, 2.5)
WRITES = {
    "tiff": ("phantom.tif", {}),
    "tiff-uint16": ("phantom16.tif", {"dtype": np.uint16}),
    "tiff-slices": ("slices", {"dtype": np.uint16}),
    "hdf5": ("phantom.h5", {}),
    "nifti": ("phantom.nii.gz", {}),
    "zarr": ("phantom.zarr", {}),
    "dicom": ("dicom", {"dtype": np.uint16, "format": "dicom"}),
}


@pytest.fixture(scope="module")
def phantom():
    image, _ = make_implant_phantom((10, 18, 22), seed=4, spacing=PHANTOM_SPACING)
    return image


@pytest.mark.parametrize("kind", WRITES)
def test_phantom_in_every_format(kind, phantom, tmp_path):
    name, options = WRITES[kind]
    data = (phantom * 1000).clip(0).astype(options.pop("dtype")) if "dtype" in options else phantom
    path = write_volume(tmp_path / name, data, spacing=PHANTOM_SPACING, **options)
    record = extract_dataset(path, **IDENTITY)
    metadata = record.dataset.scientificMetadata
    info = read_volume_info(path)
    assert metadata["shape"]["value"] == list(phantom.shape)
    assert metadata["dtype"]["value"] == data.dtype.name
    assert _in_micrometres(info) == pytest.approx(PHANTOM_SPACING)
    si, unit = to_si(metadata["voxel_size"]["value"], metadata["voxel_size"]["unit"])
    assert (si, unit) == (pytest.approx(max(PHANTOM_SPACING) * 1e-6), "m")
    assert metadata["format"]["value"] == detect_format(path)
    assert metadata["path"]["value"] == str(path)
    # The OrigDatablock lists every file on disk with its real size and SHA-256.
    on_disk = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    files = record.datablock.dataFileList
    assert len(files) == len(on_disk) == record.dataset.numberOfFiles
    source = Path(record.dataset.sourceFolder)
    for entry, file in zip(files, on_disk):
        assert source / entry.path == file
        assert entry.size == file.stat().st_size
        assert entry.chk == hashlib.sha256(file.read_bytes()).hexdigest()
    assert record.datablock.size == record.dataset.size == sum(f.stat().st_size for f in on_disk)
    assert record.datablock.chkAlg == "sha256"


def test_hdf5_nexus_values_become_nested_searchable_metadata(phantom, tmp_path):
    path = write_volume(tmp_path / "scan.nxs", phantom, spacing=PHANTOM_SPACING)
    with h5py.File(path, "a") as handle:
        source = handle.create_group("entry/instrument/source")
        source.attrs["NX_class"] = "NXsource"
        energy = source.create_dataset("energy", data=25.0)
        energy.attrs["units"] = "keV"
    record = extract_dataset(path, **IDENTITY)
    tags = record.dataset.scientificMetadata["hdf5"]
    assert tags["entry"]["instrument"]["source"]["energy"] == {"value": 25.0, "unit": "keV"}
    assert tags["entry"]["instrument"]["source"]["NX_class"]["value"] == "NXsource"
    assert tags["entry"]["NX_class"]["value"] == "NXentry"
    assert tags["volume_dataset"]["value"].startswith("/entry/")
    catalogue = SQLiteCatalogue(tmp_path / "c.sqlite")
    catalogue.ingest(record)
    for condition, total in (("hdf5.entry.instrument.source.energy>20000 eV", 1),
                             ("hdf5.entry.instrument.source.energy>30 keV", 0)):
        assert catalogue.search(Query(conditions=(parse_condition(condition),))).total == total


def test_ome_zarr_multiscale_spacing(tmp_path):
    root = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    root.create_dataset("0", data=np.zeros((6, 8, 10), np.uint16), chunks=(3, 8, 10))
    root.create_dataset("1", data=np.zeros((3, 4, 5), np.uint16))
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
        "datasets": [{"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [0.4 * 2**level, 0.2 * 2**level, 0.2 * 2**level]}]} for level in (0, 1)],
    }]
    info = read_volume_info(tmp_path / "ome.zarr")
    assert info.format == "Zarr" and info.shape == (6, 8, 10)
    assert info.voxel_size == (0.4, 0.2, 0.2) and info.voxel_unit == "um"
    assert info.tags["0"]["chunks"]["value"] == [3, 8, 10]


# --- records --------------------------------------------------------------------------------


def test_content_key_tracks_content_and_place(phantom, tmp_path):
    path = write_volume(tmp_path / "a.tif", phantom)
    key = extract_dataset(path, **IDENTITY).content_key
    assert extract_dataset(path, **IDENTITY, description="other text").content_key == key
    copy = tmp_path / "elsewhere" / "a.tif"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert extract_dataset(copy, **IDENTITY).content_key != key
    write_volume(path, phantom + 1)
    assert extract_dataset(path, **IDENTITY).content_key != key
    record = extract_dataset(path, **IDENTITY)
    assert record.dataset.scientificMetadata[CONTENT_KEY]["value"] == record.content_key


def test_raw_and_derived_records(phantom, tmp_path):
    path = write_volume(tmp_path / "a.h5", phantom, spacing=PHANTOM_SPACING)
    raw = extract_dataset(path, **IDENTITY, creation_location="/DESY/PETRA III/P05", keywords=["implant"])
    assert raw.dataset.type == "raw" and raw.dataset.principalInvestigator == "Alice Doe"
    assert raw.dataset.creationLocation == "/DESY/PETRA III/P05" and raw.dataset.dataFormat == "HDF5"
    assert raw.dataset.keywords == ["implant", "hdf5"]
    assert raw.dataset.datasetName == "a.h5" and raw.dataset.sourceFolder == str(tmp_path)
    assert "10 x 18 x 22 float32" in raw.dataset.description
    derived = extract_dataset(path, **IDENTITY, input_datasets=["20.500.12269/abc"], job_parameters={"model": "sun"})
    assert derived.dataset.type == "derived" and derived.dataset.inputDatasets == ["20.500.12269/abc"]
    assert derived.dataset.usedSoftware[0].startswith("mdlma-unified-framework")
    assert derived.dataset.jobParameters == {"model": "sun"}


def test_missing_ownership_is_an_input_error(phantom, tmp_path):
    path = write_volume(tmp_path / "a.tif", phantom)
    with pytest.raises(InputError, match="ownerGroup"):
        extract_dataset(path, **{**IDENTITY, "owner_group": " "})


# --- bad input -----------------------------------------------------------------------------


def test_truncated_hdf5_is_an_input_error(phantom, tmp_path):
    path = write_volume(tmp_path / "scan.h5", phantom)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:700])
    with pytest.raises(InputError, match=r"truncated\.h5: not a readable HDF5 file") as info:
        read_volume_info(truncated)
    assert "\n" not in str(info.value)


def test_garbage_files_are_input_errors(tmp_path):
    fake_tiff = tmp_path / "fake.tif"
    fake_tiff.write_bytes(b"II*\0" + b"\xff" * 64)
    with pytest.raises(InputError, match=r"fake\.tif: not a readable TIFF file"):
        read_volume_info(fake_tiff)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="unsupported format"):
        extract_dataset(text, **IDENTITY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a DICOM series, TIFF slice stack or Zarr store"):
        read_volume_info(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file"):
        extract_dataset(tmp_path / "missing.h5", **IDENTITY)


def test_dicom_series_with_a_foreign_file(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series / "001.dcm")
    (series / "002.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(InputError, match=r"002\.dcm: not a DICOM file"):
        read_volume_info(series)
