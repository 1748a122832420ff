"""Round trips, lazy reading/writing and format details of unified_framework.io."""

from __future__ import annotations

import json
import tracemalloc

import dask.array as da
import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
import zarr

from unified_framework.io import (
    SUPPORTED_FORMATS,
    Volume,
    detect_format,
    open_volume,
    read_volume,
    value_range,
    write_volume,
)
from unified_framework.io import volume as volume_module

SHAPE = (16, 32, 24)
SPACING = (2.0, 0.65, 0.7)  # micrometres, z y x; not exactly representable in binary

# (case id, output name, write_volume keywords, format read back)
FORMATS = [
    ("tiff", "vol.tif", {}, "tiff"),
    ("tiff-folder", "slices", {}, "tiff-folder"),
    ("hdf5", "vol.h5", {}, "hdf5"),
    ("nexus", "vol.nxs", {}, "hdf5"),
    ("nifti", "vol.nii", {}, "nifti"),
    ("nifti-gz", "vol.nii.gz", {}, "nifti"),
    ("zarr", "vol.zarr", {}, "zarr"),
    ("dicom", "series", {"format": "dicom"}, "dicom"),
]
DTYPES = ["uint8", "uint16", "int16", "float32"]
OTHER_DTYPES = ["int32", "float64"]  # TIFF writes these as "shaped" rather than ImageJ files
CASES = [
    pytest.param(name, kwargs, fmt, dtype, id=f"{case}-{dtype}")
    for case, name, kwargs, fmt in FORMATS
    for dtype in DTYPES + OTHER_DTYPES
    # DICOM stores 8/16-bit integers only (the refusal is tested in test_io_errors.py)
    if not (fmt == "dicom" and dtype not in ("uint8", "uint16", "int16"))
]


def random_volume(dtype: str, shape=SHAPE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 30, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("name, kwargs, fmt, dtype", CASES)
def test_round_trip_keeps_data_dtype_spacing(tmp_path, name, kwargs, fmt, dtype):
    data = random_volume(dtype)
    out = write_volume(tmp_path / name, data, SPACING, **kwargs)
    assert detect_format(out) == fmt

    volume = read_volume(out)
    assert isinstance(volume.data, np.ndarray)
    assert volume.dtype == data.dtype
    np.testing.assert_array_equal(volume.data, data)
    assert volume.spacing == SPACING  # exact: no float noise from unit conversions
    assert volume.metadata["format"] == fmt
    assert volume.metadata["shape"] == list(SHAPE) and volume.metadata["dtype"] == dtype
    json.dumps(volume.metadata)  # metadata must be JSON-serialisable

    lazy = read_volume(out, lazy=True)
    assert isinstance(lazy.data, da.Array) and lazy.lazy
    assert lazy.spacing == SPACING and lazy.dtype == data.dtype
    np.testing.assert_array_equal(lazy.data.compute(), data)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("img.tif", {}),
        ("img_slices", {}),
        ("img.h5", {}),
        ("img.nii.gz", {}),
        ("img.zarr", {}),
        ("img.dcm", {}),
    ],
)
def test_2d_image_round_trip(tmp_path, name, kwargs):
    image = random_volume("uint16", SHAPE[1:])
    out = write_volume(tmp_path / name, image, SPACING[1:], **kwargs)
    volume = read_volume(out)
    if name == "img_slices":  # a slice folder always holds a stack, here of one slice
        assert volume.shape == (1,) + image.shape and volume.spacing[1:] == SPACING[1:]
        np.testing.assert_array_equal(volume.data[0], image)
        return
    assert volume.ndim == 2 and volume.spacing == SPACING[1:]
    np.testing.assert_array_equal(volume.data, image)


@pytest.mark.parametrize("name, kwargs", [(n, k) for _, n, k, _ in FORMATS])
def test_writes_dask_arrays_without_loading_them_whole(tmp_path, monkeypatch, name, kwargs):
    shape = (64, 256, 256)  # 8 MiB of uint16; slabs are limited to 2 slices (256 KiB) below
    monkeypatch.setattr(volume_module, "SLAB_BYTES", 2 * 256 * 256 * 2)
    pattern = da.from_array(
        np.arange(np.prod(shape[1:]), dtype=np.uint16).reshape(shape[1:]), chunks=-1
    )
    lazy = da.stack([pattern + i for i in range(shape[0])]).rechunk((2, -1, -1))
    tracemalloc.start()
    try:
        write_volume(tmp_path / name, lazy, (3.0, 1.0, 1.0), chunks=(4, 64, 64), **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # About 2 MiB of fixed overhead (codecs, dask graph) but nothing that grows with the volume.
    assert peak < lazy.nbytes / 3, f"peak {peak} bytes while writing {lazy.nbytes} bytes"
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.data, lazy.compute())
    assert back.spacing == (3.0, 1.0, 1.0)


@pytest.mark.parametrize("name, kwargs", [(n, k) for _, n, k, _ in FORMATS])
def test_lazy_read_reduces_chunk_by_chunk(tmp_path, monkeypatch, name, kwargs):
    shape = (64, 256, 256)
    data = random_volume("uint16", shape)
    write_volume(tmp_path / name, data, chunks=(4, 64, 64), **kwargs)
    monkeypatch.setattr(volume_module, "SLAB_BYTES", 4 * 256 * 256 * 2)
    volume = open_volume(tmp_path / name)
    assert isinstance(volume.data, da.Array) and volume.data.numblocks[0] > 1
    tracemalloc.start()
    try:
        result = value_range(volume.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == (float(data.min()), float(data.max()), 0)
    assert peak < data.nbytes / 3, f"peak {peak} bytes while scanning {data.nbytes} bytes"


def test_lazy_slice_folders_and_dicom_have_one_chunk_per_slice(tmp_path):
    data = random_volume("uint16")
    for name, kwargs in (("slices", {}), ("series", {"format": "dicom"})):
        write_volume(tmp_path / name, data, SPACING, **kwargs)
        volume = read_volume(tmp_path / name, lazy=True)
        assert volume.data.chunks[0] == (1,) * SHAPE[0]


def test_lazy_hdf5_and_zarr_follow_stored_chunks(tmp_path):
    data = random_volume("float32")
    for name in ("vol.h5", "vol.zarr"):
        write_volume(tmp_path / name, data, SPACING, chunks=(4, 8, 12))
        volume = read_volume(tmp_path / name, lazy=True)
        assert volume.data.chunksize == (4, 8, 12)
        assert volume.metadata["chunks"] == [4, 8, 12]


def test_dataset_path_syntax_and_argument(tmp_path):
    data = random_volume("int16")
    out = tmp_path / "multi.h5"
    write_volume(f"{out}::/scan/raw", data, SPACING)
    with h5py.File(out, "r") as f:
        assert list(f) == ["scan"] and f["scan/raw"].shape == SHAPE
    np.testing.assert_array_equal(read_volume(f"{out}::/scan/raw").data, data)
    np.testing.assert_array_equal(read_volume(out, dataset="/scan/raw").data, data)
    np.testing.assert_array_equal(read_volume(out).data, data)  # the only 2D/3D dataset

    store = tmp_path / "group.zarr"
    write_volume(store, data, SPACING, dataset="level/0")
    assert isinstance(zarr.open(str(store), mode="r"), zarr.hierarchy.Group)
    volume = read_volume(f"{store}::level/0")
    np.testing.assert_array_equal(volume.data, data)
    assert volume.spacing == SPACING and volume.metadata["dataset"] == "/level/0"


def test_hdf5_is_nexus_nxdata(tmp_path):
    data = random_volume("uint16")
    out = write_volume(tmp_path / "scan.nxs", data, SPACING)
    with h5py.File(out, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry"
        assert f["entry"].attrs["NX_class"] == "NXentry" and f["entry"].attrs["default"] == "data"
        group = f["entry/data"]
        assert group.attrs["NX_class"] == "NXdata" and group.attrs["signal"] == "data"
        assert [a.decode() if isinstance(a, bytes) else a for a in group.attrs["axes"]] == [
            "z",
            "y",
            "x",
        ]
        for index, axis in enumerate("zyx"):
            assert group.attrs[f"{axis}_indices"] == index
            assert group[axis].attrs["units"] == "um"
            np.testing.assert_allclose(np.diff(group[axis][:]), SPACING[index])
        dataset = group["data"]
        assert dataset.chunks is not None and dataset.compression == "gzip"
        assert tuple(dataset.attrs["spacing"]) == SPACING and dataset.attrs["spacing_units"] == "um"


def test_hdf5_follows_nexus_default_and_axis_coordinates(tmp_path):
    # A NeXus file as a beamline writes it: several 3D datasets, spacing only in the axes.
    data = random_volume("float32")
    path = tmp_path / "beamline.nxs"
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["default"] = "reconstruction"
        entry["flat_fields"] = np.zeros((3, 32, 24), np.float32)
        group = entry.create_group("reconstruction")
        group.attrs.update({"NX_class": "NXdata", "signal": "volume", "axes": ["z", "y", "x"]})
        group["volume"] = data
        for axis, step, n in zip("zyx", (0.002, 0.00065, 0.0007), SHAPE):
            group[axis] = np.arange(n) * step
            group[axis].attrs["units"] = "mm"
    volume = read_volume(path)
    assert volume.metadata["dataset"] == "/entry/reconstruction/volume"
    assert volume.spacing == SPACING
    np.testing.assert_array_equal(volume.data, data)


def test_tiff_spacing_is_visible_to_imagej_readers(tmp_path):
    data = random_volume("uint16")
    out = write_volume(tmp_path / "vol.tif", data, SPACING)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == SPACING[0] and tif.imagej_metadata["unit"] == "um"
        xres = tif.pages.first.tags["XResolution"].value
        assert xres[1] / xres[0] == SPACING[2]


def test_reads_ome_tiff_physical_sizes(tmp_path):
    data = random_volume("uint16")
    path = tmp_path / "ome.ome.tif"
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeZ": 0.002,
        "PhysicalSizeZUnit": "mm",
        "PhysicalSizeY": 0.65,
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeX": 700,
        "PhysicalSizeXUnit": "nm",
    }
    tifffile.imwrite(path, data, ome=True, metadata=metadata)
    volume = read_volume(path)
    assert volume.spacing == SPACING
    np.testing.assert_array_equal(volume.data, data)


def test_reads_plain_resolution_tags_in_centimetres(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(
        path,
        random_volume("uint8", SHAPE[1:]),
        resolution=(10000 / 0.7, 10000 / 0.65),
        resolutionunit="CENTIMETER",
    )
    assert read_volume(path).spacing == pytest.approx(SPACING[1:], rel=1e-9)


def test_compressed_tiff_reads_lazily_page_by_page(tmp_path):
    data = random_volume("int16")
    path = tmp_path / "compressed.tif"
    tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "ZYX"})
    volume = read_volume(path, lazy=True)
    assert volume.data.chunks[0] == (1,) * SHAPE[0]
    np.testing.assert_array_equal(volume.data.compute(), data)


def test_slice_folder_sorts_naturally(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for index in (1, 2, 10, 9):  # lexical order would put 10 before 2 and 9
        tifffile.imwrite(folder / f"img_{index}.tif", np.full((4, 5), index, np.uint8))
    volume = read_volume(folder)
    assert volume.data[:, 0, 0].tolist() == [1, 2, 9, 10]


def test_nifti_axis_order_and_millimetres_for_other_tools(tmp_path):
    data = random_volume("int16")
    out = write_volume(tmp_path / "vol.nii.gz", data, SPACING)
    image = nib.load(out)
    assert image.shape == SHAPE[::-1]  # NIfTI: x, y, z
    np.testing.assert_array_equal(np.asarray(image.dataobj), data.transpose())
    assert image.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(image.header.get_zooms(), np.array(SPACING[::-1]) / 1000, rtol=1e-6)
    itk = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk), data)  # ITK agrees on (z, y, x)
    np.testing.assert_allclose(itk.GetSpacing(), np.array(SPACING[::-1]) / 1000, rtol=1e-6)


def test_nifti_in_microns_with_scaling(tmp_path):
    raw = random_volume("int16", (6, 7, 8))
    image = nib.Nifti1Image(raw.transpose(), np.diag([0.7, 0.65, 2.0, 1.0]))
    image.header.set_xyzt_units("micron")
    image.header.set_slope_inter(0.5, 10)
    image.set_data_dtype(np.int16)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    expected = np.asarray(nib.load(path).dataobj).transpose()
    for lazy in (False, True):
        volume = read_volume(path, lazy=lazy)
        assert volume.spacing == (2.0, 0.65, 0.7)
        assert volume.dtype == expected.dtype and np.issubdtype(volume.dtype, np.floating)
        np.testing.assert_allclose(np.asarray(volume.data), expected)


def test_dicom_series_is_readable_by_pydicom_and_simpleitk(tmp_path):
    data = random_volume("int16")
    folder = write_volume(tmp_path / "series", data, SPACING, format="dicom")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == SHAPE[0]
    headers = [pydicom.dcmread(f) for f in files]
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == SHAPE[0]
    assert all(h.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and h.Modality == "CT" for h in headers)
    assert headers[0].file_meta.MediaStorageSOPInstanceUID == headers[0].SOPInstanceUID
    np.testing.assert_array_equal(headers[3].pixel_array, data[3])

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data)
    np.testing.assert_allclose(np.array(image.GetSpacing()) * 1000, SPACING[::-1], rtol=1e-9)


def test_dicom_uint8_is_secondary_capture_readable_by_simpleitk(tmp_path):
    data = random_volume("uint8")
    folder = write_volume(tmp_path / "sc", data, SPACING, format="dicom")
    assert pydicom.dcmread(next(folder.glob("*.dcm"))).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reader.Execute()), data)


def test_dicom_sorts_by_position_not_by_name(tmp_path):
    data = random_volume("uint16")
    folder = write_volume(tmp_path / "series", data, SPACING, format="dicom")
    for index, file in enumerate(sorted(folder.glob("*.dcm"))):
        file.rename(folder / f"x{SHAPE[0] - index:03d}.dcm")  # name order is now reversed
    np.testing.assert_array_equal(read_volume(folder).data, data)


def test_dicom_rescale_is_applied(tmp_path):
    data = random_volume("uint16")
    folder = write_volume(tmp_path / "series", data, SPACING, format="dicom")
    for file in folder.glob("*.dcm"):
        ds = pydicom.dcmread(file)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = (ds.pixel_array & 0x0FFF).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.save_as(file)
    volume = read_volume(folder)
    assert volume.dtype == np.int16  # 0..4095 - 1024 fits int16
    np.testing.assert_array_equal(volume.data, (data & 0x0FFF).astype(np.int16) - 1024)


def test_reads_pydicom_ct_small_single_file():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    raw = pydicom.dcmread(path)
    volume = read_volume(path)
    assert volume.shape == (128, 128) and volume.metadata["format"] == "dicom"
    assert volume.spacing == tuple(float(s) * 1000 for s in raw.PixelSpacing)
    expected = raw.pixel_array.astype(np.int64) * int(raw.RescaleSlope) + int(raw.RescaleIntercept)
    np.testing.assert_array_equal(volume.data, expected)
    assert volume.metadata["tags"]["Modality"] == raw.Modality


def test_reads_ome_zarr_multiscale_group(tmp_path):
    data = random_volume("uint8")
    store = tmp_path / "image.zarr"
    group = zarr.open_group(str(store), mode="w")
    group.create_dataset("0", data=data, chunks=(8, 16, 16))
    group.create_dataset("1", data=data[::2, ::2, ::2])
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": list(SPACING)}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [4.0, 1.3, 1.4]}],
                },
            ],
        }
    ]
    volume = read_volume(store)
    assert volume.spacing == SPACING and volume.metadata["dataset"] == "/0"
    np.testing.assert_array_equal(volume.data, data)


def test_write_converts_between_formats_keeping_metadata(tmp_path):
    data = random_volume("uint16")
    source = write_volume(tmp_path / "series", data, SPACING, format="dicom")
    zarr_out = write_volume(tmp_path / "vol.zarr", open_volume(source))
    back = read_volume(zarr_out)
    np.testing.assert_array_equal(back.data, data)
    assert back.spacing == SPACING
    assert back.metadata["attributes"]["source_metadata"]["format"] == "dicom"
    # A second conversion does not nest the first one's copy.
    h5_out = write_volume(tmp_path / "vol.h5", back)
    stored = read_volume(h5_out).metadata["attributes"]["source_metadata"]
    assert stored["format"] == "zarr" and "source_metadata" not in stored["attributes"]


def test_write_casts_dtype_when_values_fit(tmp_path):
    data = random_volume("float32").clip(0, 255).round()
    out = write_volume(tmp_path / "vol.zarr", da.from_array(data, chunks=4), SPACING, dtype="uint8")
    back = read_volume(out)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.data, data.astype(np.uint8))


def test_bool_is_written_as_uint8_where_the_format_lacks_bool(tmp_path):
    mask = random_volume("uint8") > 128
    assert read_volume(write_volume(tmp_path / "mask.nii.gz", mask)).dtype == np.uint8
    assert read_volume(write_volume(tmp_path / "mask.h5", mask)).dtype == np.bool_
    np.testing.assert_array_equal(read_volume(tmp_path / "mask.nii.gz").data, mask)


def test_volume_dataclass():
    volume = Volume(np.zeros((2, 3, 4), np.int16))
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert (volume.ndim, volume.shape, volume.dtype, volume.lazy) == (3, (2, 3, 4), np.int16, False)
    lazy = Volume(da.ones((2, 3), chunks=1), [0.5, 2])
    assert lazy.lazy and lazy.spacing == (0.5, 2.0)
    computed = lazy.compute()
    assert isinstance(computed.data, np.ndarray) and computed.spacing == (0.5, 2.0)


def test_value_range_skips_non_finite():
    data = np.array([[1.0, np.nan], [np.inf, -3.0]], np.float32)
    assert value_range(data) == (-3.0, 1.0, 2)
    assert value_range(da.from_array(data, chunks=1)) == (-3.0, 1.0, 2)


def test_supported_formats_are_all_detected(tmp_path):
    names = {
        "tiff": "a.tif",
        "tiff-folder": "a",
        "hdf5": "a.h5",
        "nifti": "a.nii.gz",
        "dicom": "a.dcm",
        "zarr": "a.zarr",
        "png": "a.png",
        "jpeg": "a.jpg",
    }
    assert set(names) == set(SUPPORTED_FORMATS)
    for fmt, name in names.items():
        assert detect_format(tmp_path / name, for_writing=True) == fmt
