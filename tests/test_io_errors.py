"""Bad input to unified_framework.io raises one-line InputErrors; writers leave nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
import zarr

from unified_framework.errors import InputError
from unified_framework.io import (
    Volume,
    _dicom,
    _hdf5,
    _nifti,
    _tiff,
    _zarr,
    check_finite,
    read_volume,
    write_volume,
)

SHAPE = (16, 32, 24)
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def volume(dtype="uint16", shape=SHAPE):
    return np.random.default_rng(1).integers(0, 200, shape).astype(dtype)


def raises(match_parts, func, *args, **kwargs) -> str:
    """Call ``func`` expecting a one-line InputError containing every part of ``match_parts``."""
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for part in match_parts:
        assert str(part) in message, f"{part!r} not in {message!r}"
    return message


def cut(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_missing_file(tmp_path):
    raises([tmp_path / "nope.tif", "no such file"], read_volume, tmp_path / "nope.tif")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "scan.raw"
    path.write_bytes(b"\0" * 100)
    raises([path, "unknown image format", "'.raw'", ".tif"], read_volume, path)
    raises(
        [tmp_path / "out.bmp", "unknown image format"], write_volume, tmp_path / "out.bmp", volume()
    )
    raises(
        [tmp_path / "out.jpg", "JPEG images are read, not written", ".ome.tif"],
        write_volume,
        tmp_path / "out.jpg",
        volume(),
    )


def test_unknown_format_name(tmp_path):
    raises(["'bmp'", "tiff-folder"], write_volume, tmp_path / "out", volume(), format="bmp")


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("vol.tif", {}, "truncated TIFF"),  # ImageJ layout
        ("vol_int32.tif", {"dtype": "int32"}, "truncated TIFF"),  # tifffile "shaped" layout
        ("vol.h5", {}, "truncated file"),
        ("vol.nii", {}, "truncated NIfTI"),
        ("vol.nii.gz", {}, "Compressed file ended"),
    ],
)
def test_truncated_files(tmp_path, name, kwargs, expected):
    path = write_volume(tmp_path / name, volume(), **kwargs)
    cut(path)
    message = raises([path, "expected a complete"], read_volume, path)
    assert expected in message or "corrupt or truncated" in message


@pytest.mark.parametrize("fraction", [0.3, 0.97])
def test_truncated_imagej_tiff_is_never_read_as_a_shorter_stack(tmp_path, fraction):
    path = write_volume(tmp_path / "vol.tif", volume())
    cut(path, fraction)
    raises([path, "TIFF"], read_volume, path)
    raises([path, "TIFF"], read_volume, path, lazy=True)


def test_nifti_missing_its_last_bytes_is_refused_up_front_also_lazily(tmp_path):
    # nibabel reports vox_offset 0 for some files although the data start at byte 352:
    # the size check must use the offset nibabel reads from, or a file short by under
    # 352 bytes passes the lazy open and is catalogued.
    source = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    path = tmp_path / "anatomical.nii"
    path.write_bytes(source.read_bytes()[:-100])
    raises([path, "truncated NIfTI"], read_volume, path, lazy=True)


def test_truncated_gzip_nifti_read_lazily_fails_on_compute(tmp_path):
    path = write_volume(tmp_path / "vol.nii.gz", volume())
    cut(path)
    lazy = read_volume(path, lazy=True)  # the header is intact; the data is not
    raises([path, "NIfTI", "expected a complete"], lazy.data.compute)


def test_truncated_slice_in_folder_names_the_slice(tmp_path):
    folder = write_volume(tmp_path / "slices", volume())
    cut(folder / "slice_00007.tif")
    raises([folder / "slice_00007.tif", "TIFF"], read_volume, folder)


@pytest.mark.parametrize("name", ["vol.tif", "vol.h5", "vol.nii", "vol.nii.gz", "one.dcm"])
def test_corrupt_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    raises([path, "expected a"], read_volume, path)


@pytest.mark.parametrize("name", ["vol.tif", "vol.h5", "vol.nii"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    raises([path, "empty"], read_volume, path)


def test_corrupt_dicom_slice_names_the_file(tmp_path):
    folder = write_volume(tmp_path / "series", volume(), format="dicom")
    bad = folder / "slice_00003.dcm"
    bad.write_bytes(b"garbage" * 100)
    raises([bad, "DICOM"], read_volume, folder)


@pytest.mark.parametrize(
    "name, content, what",
    [
        ("photo.tif", "png", "PNG"),
        ("scan.nii", "hdf5", "HDF5"),
        ("scan.h5", "tiff", "TIFF"),
        ("scan.nii.gz", "tiff", "TIFF"),
    ],
)
def test_mislabelled_files(tmp_path, name, content, what):
    path = tmp_path / name
    if content == "png":
        path.write_bytes(PNG_BYTES)
    else:
        real = write_volume(tmp_path / {"hdf5": "real.h5", "tiff": "real.tif"}[content], volume())
        shutil.copy(real, path)
    message = raises([path, f"content is {what} data", "expected a valid"], read_volume, path)
    assert "name says" in message


def test_four_dimensional_data(tmp_path):
    path = tmp_path / "4d.h5"
    with h5py.File(path, "w") as f:
        f["stack"] = np.zeros((2, 3, 4, 5), np.uint8)
    raises(
        [path, "4 dimensions", "2x3x4x5", "expected a 2D image or a 3D volume"], read_volume, path
    )
    raises(
        ["4 dimensions", "expected a 2D image or a 3D volume"],
        write_volume,
        tmp_path / "4d.tif",
        np.zeros((2, 3, 4, 5)),
    )
    tif = tmp_path / "4d.tif"
    tifffile.imwrite(
        tif, np.zeros((2, 3, 4, 5), np.uint8), photometric="minisblack", metadata={"axes": "TZYX"}
    )
    raises([tif, "4 dimensions"], read_volume, tif)


def test_expect_ndim(tmp_path):
    image = write_volume(tmp_path / "image.tif", volume(shape=SHAPE[1:]))
    raises(
        [image, "2 dimensions", "32x24", "expected a 3D volume"], read_volume, image, expect_ndim=3
    )
    stack = write_volume(tmp_path / "stack.zarr", volume())
    raises([stack, "3 dimensions", "expected a 2D image"], read_volume, stack, expect_ndim=2)
    assert read_volume(stack, expect_ndim=3).ndim == 3


def test_colour_tiff_is_refused_where_grey_values_are_needed(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    assert read_volume(path).axes == "yxc"  # a 2D colour image is read as (y, x, c) ...
    raises(
        [path, "colour/multi-channel image (8x9 pixels, 3 channels)", "--grey"],
        read_volume,
        path,
        grey=True,
    )
    stack = (
        tmp_path / "rgb_stack.tif"
    )  # ... a stack of colour pages is neither that nor a grey volume
    tifffile.imwrite(stack, np.zeros((2, 8, 9, 3), np.uint8), photometric="rgb")
    raises([stack, "channel", "expected a 2D colour image"], read_volume, stack)


def test_nan_and_inf(tmp_path):
    data = volume("float32")
    data[1, 2, 3], data[4, 5, 6] = np.nan, np.inf
    path = write_volume(tmp_path / "labels.zarr", data)
    assert np.isnan(read_volume(path).data).sum() == 1  # allowed by default
    raises([path, "1 NaN", "1 infinite", "expected finite"], read_volume, path, allow_nan=False)
    raises([path, "1 NaN"], read_volume, path, lazy=True, allow_nan=False)
    raises(["ground truth", "1 NaN"], check_finite, data, "ground truth")
    raises([path, "1 NaN"], check_finite, read_volume(path, lazy=True))
    check_finite(volume("uint8"), "integers are always finite")
    check_finite(Volume(np.ones(SHAPE, np.float32)), "finite floats")


def test_hdf5_dataset_not_found_lists_available(tmp_path):
    path = write_volume(tmp_path / "scan.h5", volume())
    raises(
        [path, "'/entry/data/missing'", "/entry/data/data (16x32x24 uint16)"],
        read_volume,
        f"{path}::/entry/data/missing",
    )
    raises([path, "'/entry'"], read_volume, path, dataset="/entry")  # a group, not a dataset


def test_hdf5_without_default_and_several_volumes_lists_candidates(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["a"] = volume()
        f["b/c"] = volume("float32")
        f["axis"] = np.arange(3)
    message = raises(
        [path, "2 2D/3D datasets", "dataset=", "/a (16x32x24 uint16)", "/b/c (16x32x24 float32)"],
        read_volume,
        path,
    )
    assert "/axis (3 int64)" in message
    assert read_volume(path, dataset="/b/c").dtype == np.float32


def test_hdf5_without_any_image_dataset(tmp_path):
    path = tmp_path / "table.h5"
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = np.arange(3), np.arange(4)
    raises([path, "no 2D/3D dataset", "/x (3 int64)"], read_volume, path)


def test_zarr_group_array_not_found(tmp_path):
    store = tmp_path / "group.zarr"
    group = zarr.open_group(str(store), mode="w")
    group["a"], group["b"] = volume(), volume()
    raises([store, "2 2D/3D datasets", "a (16x32x24", "b (16x32x24"], read_volume, store)
    raises([store, "no array 'c'", "a, b"], read_volume, store, dataset="c")


def test_dataset_for_a_format_without_datasets(tmp_path):
    path = write_volume(tmp_path / "vol.tif", volume())
    raises([path, "no datasets", "HDF5 and Zarr"], read_volume, f"{path}::/entry/data")


def test_empty_slice_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    raises([folder, "no *.tif/*.tiff or *.dcm slices"], read_volume, folder)
    raises([folder, "no *.tif/*.tiff slices"], read_volume, folder, format="tiff-folder")
    raises([folder, "no *.dcm slices"], read_volume, folder, format="dicom")


def test_slices_of_different_shapes(tmp_path):
    folder = write_volume(tmp_path / "slices", volume())
    tifffile.imwrite(folder / "slice_00016.tif", np.zeros((31, 24), np.uint16))
    raises(
        [
            folder,
            "slice_00016.tif is 31x24 uint16",
            "slice_00000.tif is 32x24 uint16",
            "equal shape",
        ],
        read_volume,
        folder,
    )
    tifffile.imwrite(folder / "slice_00016.tif", np.zeros((32, 24), np.float32))
    raises(
        [folder, "slice_00016.tif", "float32", "equal shape and dtype"],
        read_volume,
        folder,
        lazy=True,
    )


def test_dicom_slices_of_different_shapes_and_mixed_series(tmp_path):
    folder = write_volume(tmp_path / "series", volume(), format="dicom")
    other = write_volume(tmp_path / "other", volume(shape=(2, 8, 8)), format="dicom")
    shutil.copy(other / "slice_00000.dcm", folder / "zz_extra.dcm")
    raises([folder, "mixes 2 DICOM series", "16 files", "1 files"], read_volume, folder)
    ds = pydicom.dcmread(other / "slice_00001.dcm")
    ds.SeriesInstanceUID = pydicom.dcmread(folder / "slice_00000.dcm").SeriesInstanceUID
    ds.save_as(folder / "zz_extra.dcm")
    raises([folder, "zz_extra.dcm is 8x8", "32x24", "equal shape"], read_volume, folder)


def test_dtype_refused_by_format_or_cast(tmp_path):
    raises(
        ["series", "cannot store dtype float32", "uint8, uint16, int16"],
        write_volume,
        tmp_path / "series",
        volume("float32"),
        format="dicom",
    )
    raises(["cannot store dtype float16"], write_volume, tmp_path / "v.tif", volume("float16"))
    data = volume("float32")
    data[0, 0, 0] = 300
    raises(
        [tmp_path / "v.zarr", "0..300", "do not fit uint8"],
        write_volume,
        tmp_path / "v.zarr",
        data,
        dtype="uint8",
    )
    assert not (tmp_path / "v.zarr").exists()


def test_bad_spacing_and_chunks(tmp_path):
    raises(
        ["3 values", "expected 2"],
        write_volume,
        tmp_path / "v.tif",
        volume(shape=(4, 5)),
        (1.0, 2.0, 3.0),
    )
    raises(["positive"], write_volume, tmp_path / "v.tif", volume(), (1.0, 0.0, 1.0))
    raises(
        ["chunks (4, 4)", "3 positive sizes"],
        write_volume,
        tmp_path / "v.zarr",
        volume(),
        chunks=(4, 4),
    )


def test_3d_volume_to_single_dicom_file_is_refused(tmp_path):
    raises([tmp_path / "vol.dcm", "series folder"], write_volume, tmp_path / "vol.dcm", volume())
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------- atomic writes
WRITERS = [
    ("vol.tif", {}, _tiff),
    ("slices", {}, _tiff),
    ("vol.h5", {}, _hdf5),
    ("vol.nii.gz", {}, _nifti),
    ("vol.zarr", {}, _zarr),
    ("series", {"format": "dicom"}, _dicom),
]


def failing_slabs(real):
    """iter_slabs that delivers the first slab and then fails, like a full disk."""

    def slabs(*args, **kwargs):
        iterator = real(*args, **kwargs)
        yield next(iterator)
        raise OSError("No space left on device (simulated)")

    return slabs


@pytest.mark.parametrize("name, kwargs, backend", WRITERS)
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, name, kwargs, backend):
    # Mocked: a disk filling up mid-write cannot be produced for real in a test.
    monkeypatch.setattr(backend, "iter_slabs", failing_slabs(backend.iter_slabs))
    with pytest.raises(OSError, match="simulated"):
        write_volume(tmp_path / name, volume(), chunks=4, **kwargs)
    assert os.listdir(tmp_path) == []  # neither the output nor a temporary


@pytest.mark.parametrize("name, kwargs, backend", WRITERS)
def test_failed_overwrite_keeps_the_old_output(tmp_path, monkeypatch, name, kwargs, backend):
    old = volume("uint16")
    write_volume(tmp_path / name, old, **kwargs)
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setattr(backend, "iter_slabs", failing_slabs(backend.iter_slabs))
    with pytest.raises(OSError, match="simulated"):
        write_volume(tmp_path / name, old + 1, chunks=4, **kwargs)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before
    np.testing.assert_array_equal(read_volume(tmp_path / name).data, old)


# --------------------------------------------------- corrupt chunks, hostile headers, memory
def damage(chunk: Path, how: str) -> None:
    data = chunk.read_bytes()
    chunk.write_bytes(b"garbage" * 10 if how == "garbage" else data[: len(data) // 2])


def hdf5_chunk(path: Path, index: int) -> tuple[int, int]:
    """Byte offset and size of the ``index``-th stored chunk of /entry/data/data."""
    with h5py.File(path, "r") as f:
        info = f["/entry/data/data"].id.get_chunk_info(index)
    return info.byte_offset, info.size


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_corrupt_zarr_chunk_is_named_alike_lazily_and_eagerly(tmp_path, how):
    store = write_volume(tmp_path / "vol.zarr", volume(), chunks=8)
    damage(store / "1.2.0", how)
    eager = raises(
        [
            store,
            "chunk 1.2.0 (z 8:16, y 16:24, x 0:8)",
            "corrupt or truncated",
            "expected a complete, valid Zarr",
        ],
        read_volume,
        store,
    )
    assert raises([], read_volume(store, lazy=True).data.compute) == eager
    assert raises([], read_volume(store, lazy=True).data[8:10, 16:20, 2:4].compute) == eager


def test_corrupt_hdf5_chunk_is_named_alike_lazily_and_eagerly(tmp_path):
    path = write_volume(tmp_path / "vol.h5", volume(), chunks=8)
    offset, size = hdf5_chunk(path, 5)  # chunks are stored in grid order: 5 is (0, 1, 2)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    eager = raises(
        [path, "chunk 0.1.2 (z 0:8, y 8:16, x 16:24)", "expected a complete, valid HDF5"],
        read_volume,
        path,
    )
    assert raises([], read_volume(path, lazy=True).data.compute) == eager


def test_zarr_shape_far_beyond_the_stored_chunks_is_refused_at_once(tmp_path):
    store = write_volume(tmp_path / "vol.zarr", volume(), chunks=8)
    meta = json.loads((store / ".zarray").read_text())
    meta["shape"] = [100000] * 3
    (store / ".zarray").write_text(json.dumps(meta))
    for lazy in (False, True):
        raises(
            [
                store,
                "shape 100000x100000x100000 uint16",
                "only 24 are stored",
                "expected a shape that matches",
            ],
            read_volume,
            store,
            lazy=lazy,
        )


def test_hdf5_shape_far_beyond_the_stored_chunks_is_refused_at_once(tmp_path):
    path = tmp_path / "claims.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", shape=(100000,) * 3, dtype="uint8", chunks=(64, 64, 64))[
            :64, :64, :64
        ] = 1
    raises(
        [f"{path}::/v", "100000x100000x100000", "only 1 are stored"], read_volume, path, lazy=True
    )


@pytest.mark.parametrize("name", ["big.zarr", "big.h5"])
def test_eager_read_larger_than_free_memory_is_refused_up_front(tmp_path, name):
    # 16 TiB of fill value in 8192 chunks of 2 GiB (HDF5 caps a chunk below 2**32 elements):
    # a legitimate sparse volume, too big for any memory.
    shape, chunks = (2**14, 2**15, 2**15), (2**10, 2**10, 2**11)
    path = tmp_path / name
    if name.endswith(".zarr"):
        zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="uint8")
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("v", shape=shape, chunks=chunks, dtype="uint8")
    raises([path, "16384x32768x32768 uint8 needs 16.0 TiB of memory", "lazy"], read_volume, path)
    assert read_volume(path, lazy=True).shape == shape


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_truncated_tiff_is_reported_as_truncated_not_as_2d(tmp_path, fraction):
    path = write_volume(tmp_path / "vol.tif", volume())
    cut(path, fraction)
    for lazy in (False, True):
        message = raises([path, "truncated TIFF"], read_volume, path, lazy=lazy, expect_ndim=3)
        assert "dimensions" not in message


def test_corrupt_compressed_tiff_page_is_named_alike_lazily_and_eagerly(tmp_path):
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, volume(), compression="zlib", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        offset, size = tif.pages[5].dataoffsets[0], tif.pages[5].databytecounts[0]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * size)
    eager = raises(
        [path, "slice 5 cannot be read", "expected a complete, valid TIFF"], read_volume, path
    )
    assert raises([], read_volume(path, lazy=True).data.compute) == eager


def test_nested_zarr_keys_are_counted_as_stored_chunks(tmp_path):
    # zarr's own count sees only the top folder of "/"-separated keys (1 here, of 1089).
    options = dict(
        mode="w", shape=(65, 128, 128), chunks=(1, 1, 1), dtype="uint8", dimension_separator="/"
    )
    sparse = tmp_path / "sparse.zarr"
    zarr.open_array(str(sparse), **options)[:1, :33, :33] = (
        1  # 1089 of 1064960 chunks: sparse, not damaged
    )
    assert read_volume(sparse, lazy=True).shape == (65, 128, 128)
    damaged = tmp_path / "damaged.zarr"
    zarr.open_array(str(damaged), **options)[0, 0, 0] = 1
    raises([damaged, "claims 1064960 chunks", "only 1 are stored"], read_volume, damaged, lazy=True)
