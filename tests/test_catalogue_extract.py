"""Metadata extraction on files shipped by installed packages and on the project's phantom."""

from __future__ import annotations

import hashlib
import json
import shutil
from decimal import Decimal
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
    Query,
    SQLiteCatalogue,
    dataset_path,
    extract_dataset,
    format_tags,
    parse_condition,
    to_si,
)
from unified_framework.catalogue.extract import geometry_metadata
from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import Volume, detect_format, open_volume, read_volume, write_volume

IDENTITY = {"owner": "Alice Doe", "owner_group": "p05", "contact_email": "alice@example.org"}
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
SKIMAGE_TIFF = Path(__import__("skimage").__file__).parent / "data" / "multipage.tif"
H5PY_STRINGS = Path(h5py.__file__).parent / "tests" / "data_files" / "vlen_string_dset.h5"


def _metadata(path) -> dict:
    return extract_dataset(path, **IDENTITY).dataset.scientificMetadata


def assert_agrees_with_io(path) -> dict:
    """The catalogue describes ``path`` exactly as :mod:`unified_framework.io` reads it."""
    volume = read_volume(path)  # eager: io's full check of the file
    metadata = _metadata(path)
    assert metadata["format"]["value"] == volume.metadata["format"] == detect_format(path)
    assert metadata["shape"]["value"] == list(volume.shape) == list(volume.data.shape)
    assert metadata["dtype"]["value"] == volume.dtype.name
    axes = "zyx"[-volume.ndim :]
    assert [metadata[f"voxel_size_{a}"] for a in axes] == [
        {"value": s, "unit": "um"} for s in volume.spacing
    ]
    assert metadata["voxel_size"] == {"value": max(volume.spacing), "unit": "um"}
    return metadata


# --- files shipped by installed packages -------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm"])
def test_dicom_tags_from_pydicom_test_files(name):
    path = get_testdata_file(name)
    header = pydicom.dcmread(path)
    metadata = assert_agrees_with_io(path)
    tags = metadata["dicom"]
    assert metadata["format"]["value"] == "dicom"
    assert tags["Modality"]["value"] == header.Modality
    assert tags["Rows"]["value"] == header.Rows and tags["Columns"]["value"] == header.Columns
    assert tags["BitsAllocated"]["value"] == header.BitsAllocated
    assert tags["SeriesInstanceUID"]["value"] == str(header.SeriesInstanceUID)
    assert tags["PixelSpacing"] == {"value": [float(v) for v in header.PixelSpacing], "unit": "mm"}
    # io's micrometres are the header's millimetres, without binary noise.
    assert metadata["voxel_size_x"]["value"] == float(Decimal(str(header.PixelSpacing[1])) * 1000)
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


def test_nifti_header_from_nibabel_test_file():
    path = NIBABEL_DATA / "anatomical.nii"  # LAS orientation, zooms in mm
    image = nibabel.load(path)
    metadata = assert_agrees_with_io(path)
    assert metadata["nifti"]["dim"]["value"] == image.header["dim"].tolist()
    assert metadata["nifti"]["datatype_name"]["value"] == image.get_data_dtype().name
    zooms_um = [float(Decimal(str(z)) * 1000) for z in reversed(image.header.get_zooms()[:3])]
    assert [metadata[f"voxel_size_{a}"]["value"] for a in "zyx"] == pytest.approx(
        zooms_um, rel=1e-6
    )


def test_tiff_tags_from_scikit_image_test_file():
    metadata = assert_agrees_with_io(SKIMAGE_TIFF)
    tags = metadata["tiff"]
    with tifffile.TiffFile(SKIMAGE_TIFF) as tif:
        page = tif.pages[0]
        assert metadata["shape"]["value"] == list(tif.series[0].shape)
        assert tags["NumberOfPages"]["value"] == len(tif.pages)
        assert tags["ImageWidth"]["value"] == page.imagewidth
        assert tags["Compression"]["value"] == page.compression.name
    assert metadata["format"]["value"] == "tiff" and metadata["dtype"]["value"] == "uint8"


@pytest.mark.parametrize(
    "path, message",
    [
        (NIBABEL_DATA / "example4d.nii.gz", "4D NIfTI with 2 volumes"),
        (H5PY_STRINGS, "has 1 dimensions"),
    ],
)
def test_catalogue_refuses_what_io_refuses(path, message):
    with pytest.raises(InputError, match=message) as by_io:
        read_volume(path)
    with pytest.raises(InputError) as by_catalogue:
        extract_dataset(path, **IDENTITY)
    assert str(by_catalogue.value) == str(by_io.value) and "\n" not in str(by_io.value)


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
    metadata = assert_agrees_with_io(path)
    assert metadata["shape"]["value"] == list(phantom.shape)
    assert metadata["dtype"]["value"] == data.dtype.name
    assert [metadata[f"voxel_size_{a}"]["value"] for a in "zyx"] == pytest.approx(PHANTOM_SPACING)
    si, unit = to_si(metadata["voxel_size"]["value"], metadata["voxel_size"]["unit"])
    assert (si, unit) == (pytest.approx(max(PHANTOM_SPACING) * 1e-6), "m")
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
    assert (
        tags["volume_dataset"]["value"]
        == read_volume(path).metadata["dataset"]
        == "/entry/data/data"
    )
    catalogue = SQLiteCatalogue(tmp_path / "c.sqlite")
    catalogue.ingest(record)
    for condition, total in (
        ("hdf5.entry.instrument.source.energy>20000 eV", 1),
        ("hdf5.entry.instrument.source.energy>30 keV", 0),
    ):
        assert catalogue.search(Query(conditions=(parse_condition(condition),))).total == total


def test_hdf5_spacing_in_nanometres_agrees_with_io(tmp_path):
    # The catalogue once read this file's spacing as micrometres (1000x too large).
    path = tmp_path / "nm.h5"
    with h5py.File(path, "w") as handle:
        data = handle.create_dataset("volume", data=np.zeros((3, 4, 5), np.uint16))
        data.attrs["spacing"] = [650.0, 325.0, 325.0]
        data.attrs["spacing_units"] = "nm"
    metadata = assert_agrees_with_io(path)
    assert [metadata[f"voxel_size_{a}"]["value"] for a in "zyx"] == [0.65, 0.325, 0.325]
    assert metadata["hdf5"]["volume_dataset"]["value"] == "/volume"


def test_arrays_of_one_file_are_datasets_named_with_double_colon(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["recon"] = np.zeros((3, 4, 5), np.uint16)
        handle["mask"] = np.ones((3, 4, 5), np.uint8)
    with pytest.raises(InputError, match="choose one with dataset= or FILE::DATASET"):
        extract_dataset(path, **IDENTITY)  # io reads neither by itself: neither does the catalogue
    recon, mask = (extract_dataset(f"{path}::/{name}", **IDENTITY) for name in ("recon", "mask"))
    assert recon.content_key != mask.content_key
    assert (
        extract_dataset(f"{tmp_path}/../{tmp_path.name}/two.h5::recon", **IDENTITY).content_key
        == recon.content_key
    )
    assert (
        recon.dataset.datasetName == "two.h5::/recon"
        and mask.dataset.scientificMetadata["dtype"]["value"] == "uint8"
    )
    for record, name in ((recon, "/recon"), (mask, "/mask")):
        job_path = dataset_path(record.to_dict()["dataset"])
        assert job_path == f"{path}::{name}"
        assert (
            read_volume(job_path).dtype.name == record.dataset.scientificMetadata["dtype"]["value"]
        )


def test_naming_the_array_io_reads_anyway_is_the_same_dataset(phantom, tmp_path):
    path = write_volume(tmp_path / "scan.nxs", phantom)
    plain_record = extract_dataset(path, **IDENTITY)
    named = extract_dataset(f"{path}::/entry/data/data", **IDENTITY)
    assert named.content_key == plain_record.content_key and named.dataset.datasetName == "scan.nxs"


def _ome_zarr(path: Path, unit: str, scale: tuple[float, float, float]) -> Path:
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("0", data=np.zeros((6, 8, 10), np.uint16), chunks=(3, 8, 10))
    root.create_dataset("1", data=np.zeros((3, 4, 5), np.uint16))
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": unit} for a in "zyx"],
            "datasets": [
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [s * 2**level for s in scale]}
                    ],
                }
                for level in (0, 1)
            ],
        }
    ]
    return path


@pytest.mark.parametrize(
    "unit, scale, expected_um",
    [
        ("micrometer", (0.4, 0.2, 0.2), [0.4, 0.2, 0.2]),
        ("millimeter", (0.004, 0.002, 0.002), [4.0, 2.0, 2.0]),
        ("nanometer", (400.0, 200.0, 200.0), [0.4, 0.2, 0.2]),
    ],
)
def test_ome_zarr_level0_and_spacing_agree_with_io(tmp_path, unit, scale, expected_um):
    path = _ome_zarr(tmp_path / "ome.zarr", unit, scale)
    metadata = assert_agrees_with_io(path)
    assert metadata["shape"]["value"] == [6, 8, 10]  # level 0, not the larger-numbered level
    assert [metadata[f"voxel_size_{a}"]["value"] for a in "zyx"] == expected_um
    assert metadata["zarr"]["0"]["chunks"]["value"] == [3, 8, 10]
    assert "Blosc" in metadata["zarr"]["compressor"]["value"]
    assert metadata["zarr"]["volume_dataset"]["value"] == "/0"


def test_geometry_comes_from_the_io_volume():
    # The one place the catalogue takes world geometry from io's Volume.
    volume = Volume(np.zeros((2, 3, 4), np.uint8), (2.0, 1.0, 1.0), origin=(5.0, 0.0, -3.0))
    assert geometry_metadata(volume)["affine"]["value"][0] == [2.0, 0.0, 0.0, 5.0]
    metadata = _metadata(NIBABEL_DATA / "anatomical.nii")
    las = read_volume(NIBABEL_DATA / "anatomical.nii")
    assert metadata["affine"] == {"value": np.asarray(las.affine, float).tolist(), "unit": "um"}
    assert metadata["orientation"]["value"] == las.orientation == "LAS"


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


def test_the_same_files_by_any_name_are_one_record(phantom, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    path = write_volume(tmp_path / "data" / "a.tif", phantom)
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    names = [
        path,
        "../data/a.tif",
        tmp_path / "link" / "a.tif",
        tmp_path / "other" / ".." / "link" / "a.tif",
    ]
    records = [extract_dataset(name, **IDENTITY) for name in names]
    assert {r.content_key for r in records} == {records[0].content_key}
    assert {r.path for r in records} == {str(path)}
    assert {r.dataset.sourceFolder for r in records} == {str(tmp_path / "data")}
    assert {r.dataset.datasetName for r in records} == {"a.tif"}


def test_raw_and_derived_records(phantom, tmp_path):
    path = write_volume(tmp_path / "a.h5", phantom, spacing=PHANTOM_SPACING)
    raw = extract_dataset(
        path, **IDENTITY, creation_location="/DESY/PETRA III/P05", keywords=["implant"]
    )
    assert raw.dataset.type == "raw" and raw.dataset.principalInvestigator == "Alice Doe"
    assert (
        raw.dataset.creationLocation == "/DESY/PETRA III/P05" and raw.dataset.dataFormat == "hdf5"
    )
    assert raw.dataset.keywords == ["implant", "hdf5"]
    assert raw.dataset.datasetName == "a.h5" and raw.dataset.sourceFolder == str(tmp_path)
    assert raw.dataset.description == "hdf5 volume 10 x 18 x 22 float32, voxel 5/2.5/2.5 um"
    derived = extract_dataset(
        path, **IDENTITY, input_datasets=["20.500.12269/abc"], job_parameters={"model": "sun"}
    )
    assert derived.dataset.type == "derived" and derived.dataset.inputDatasets == [
        "20.500.12269/abc"
    ]
    assert derived.dataset.usedSoftware[0].startswith("mdlma-unified-framework")
    assert derived.dataset.jobParameters == {"model": "sun"}


def test_missing_ownership_is_an_input_error(phantom, tmp_path):
    path = write_volume(tmp_path / "a.tif", phantom)
    with pytest.raises(InputError, match="ownerGroup"):
        extract_dataset(path, **{**IDENTITY, "owner_group": " "})


# --- bad input: the catalogue refuses what io refuses, in one line ---------------------------


def _truncated(path: Path, keep: int) -> Path:
    cut = path.with_name("truncated" + "".join(path.suffixes))
    cut.write_bytes(path.read_bytes()[:keep])
    return cut


@pytest.mark.parametrize(
    "name, cut, message",
    [
        ("scan.h5", lambda size: 700, r"truncated\.h5: cannot read HDF5 file"),
        ("scan.tif", lambda size: size - 100, r"truncated\.tif: corrupt or truncated TIFF"),
        ("scan.nii", lambda size: size // 2, r"truncated\.nii: truncated NIfTI"),
    ],
)
def test_truncated_files_are_input_errors(phantom, tmp_path, name, cut, message):
    path = write_volume(tmp_path / name, phantom.astype(np.uint16))
    truncated = _truncated(path, cut(path.stat().st_size))
    with pytest.raises(InputError, match=message) as error:
        extract_dataset(truncated, **IDENTITY)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match=message):
        read_volume(truncated)


def test_garbage_files_are_input_errors(tmp_path):
    fake_tiff = tmp_path / "fake.tif"
    fake_tiff.write_bytes(b"II*\0" + b"\xff" * 64)
    with pytest.raises(InputError, match=r"fake\.tif: cannot read TIFF file"):
        extract_dataset(fake_tiff, **IDENTITY)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="unknown image format"):
        extract_dataset(text, **IDENTITY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder holds no"):
        extract_dataset(tmp_path / "empty", **IDENTITY)
    with pytest.raises(InputError, match="no such file"):
        extract_dataset(tmp_path / "missing.h5", **IDENTITY)


def test_dicom_series_with_a_foreign_file(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series / "001.dcm")
    (series / "002.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(InputError, match=r"002\.dcm: cannot read DICOM"):
        extract_dataset(series, **IDENTITY)


def test_tags_of_an_unreadable_header_are_one_line(tmp_path):
    # io read the volume; if the tag reader then meets a broken header it says so in one line.
    path = write_volume(tmp_path / "a.nii", np.zeros((2, 3, 4), np.uint8))
    volume = open_volume(path)
    path.write_bytes(b"garbage" * 60)
    with pytest.raises(InputError, match=r"a\.nii: cannot read NIfTI file") as error:
        format_tags(volume)
    assert "\n" not in str(error.value)
