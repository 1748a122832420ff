"""Big-endian data (ImageJ TIFF, many NIfTI files) is accepted like native data of the same kind and size.

Readers hand data on in the machine's byte order and say in ``metadata["byte_order"]``
what the file held; writers always write native order; a SUN model trained on native
uint16 predicts a big-endian uint16 volume.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
import zarr

from unified_framework.cli.main import main
from unified_framework.data import CLASS_NAMES, make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import describe_dtype, read_volume, write_volume
from unified_framework.sun.model_package import load_model
from unified_framework.sun.training import TrainingConfig, train_sun

SHAPE = (6, 7, 9)
BIG = np.dtype(">u2")
#: 5 µm voxels, x towards the right (LAS), voxel 0 away from the origin (mm).
LAS_AFFINE = np.array([[-0.005, 0, 0, 1.0], [0, 0.005, 0, -2.0], [0, 0, 0.005, 3.0], [0, 0, 0, 1]])


def big_endian_volume() -> np.ndarray:
    data = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE) * 97
    return data.astype(BIG)


@pytest.mark.parametrize("imagej", [False, True], ids=["tiff", "imagej"])
def test_big_endian_tiff_reads_as_native_uint16(tmp_path, imagej):
    data = big_endian_volume()
    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path, data, byteorder=">", imagej=imagej, photometric="minisblack", metadata={"axes": "ZYX"}
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == ">"
    for lazy in (False, True):
        volume = read_volume(path, lazy=lazy)
        assert volume.dtype == np.dtype("uint16") and volume.dtype.isnative
        assert volume.metadata["byte_order"] == "big-endian"
        np.testing.assert_array_equal(np.asarray(volume.data), data)


@pytest.mark.parametrize("name", ["out.tif", "out.h5", "out.zarr", "out.nii", "series"])
def test_writers_write_native_order_from_big_endian_arrays(tmp_path, name):
    data = big_endian_volume()
    out = write_volume(tmp_path / name, data, format="dicom" if name == "series" else None)
    assert data.dtype == BIG  # the caller's array is left as it was
    back = read_volume(out)
    assert back.dtype == np.uint16 and "byte_order" not in back.metadata
    np.testing.assert_array_equal(back.data, data)
    if name == "out.h5":
        with h5py.File(out, "r") as f:
            assert f["entry/data/data"].dtype.isnative
    if name == "out.zarr":
        assert zarr.open(str(out), mode="r").dtype.isnative
    if name == "out.nii":
        assert nib.load(out).header.endianness == nib.volumeutils.native_code


def test_describe_dtype():
    assert describe_dtype(">u2") == "uint16 (big-endian)"
    assert describe_dtype("=u2") == "uint16" and describe_dtype(">u1") == "uint8"


@pytest.fixture(scope="module")
def uint16_model(tmp_path_factory) -> Path:
    """A tiny SUN model trained on native uint16 phantoms (a few seconds)."""
    torch.set_num_threads(2)
    image, labels = make_implant_phantom((24, 24, 24), seed=0)
    image = np.clip(image * 40000, 0, 65535).astype(np.uint16)
    config = TrainingConfig(
        axes="3",
        depth=2,
        base_width=4,
        input_size=24,
        batch_size=4,
        steps=4,
        val_every=2,
        log_every=2,
        patience=0,
        checkpoint_every=4,
    )
    path = tmp_path_factory.mktemp("sun-uint16") / "sun.pt"
    train_sun([image], [labels], path, config, class_names=CLASS_NAMES, voxel_size=(5.0, 5.0, 5.0))
    assert load_model(path).input_dtype == "uint16"
    return path


@pytest.mark.training
def test_model_dtype_check_compares_kind_and_size_not_byte_order(uint16_model):
    model = load_model(uint16_model)
    model.check_volume((8, 8, 8), ">u2", "big")
    model.check_volume((8, 8, 8), "<u2", "little")
    for wrong in ("int16", "uint8", ">i2"):
        with pytest.raises(InputError, match="trained on uint16"):
            model.check_volume((8, 8, 8), wrong, "wrong")


@pytest.mark.parametrize("name", ["big.tif", "big.nii"])
@pytest.mark.training
def test_sun_predict_on_big_endian_files(tmp_path, uint16_model, name):
    image, _ = make_implant_phantom((24, 24, 24), seed=3)
    data = np.clip(image * 40000, 0, 65535).astype(BIG)
    path = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(
            path,
            data,
            byteorder=">",
            imagej=True,
            photometric="minisblack",
            metadata={"axes": "ZYX"},
        )
    else:
        image = nib.Nifti1Image(data.T, LAS_AFFINE, nib.Nifti1Header(endianness=">"))
        image.set_data_dtype(BIG)  # stored as is, no scaling to float
        nib.save(image, path)
        assert nib.load(path).header.get_data_dtype() == BIG
    out = tmp_path / "labels.nii"
    assert (
        main(
            [
                "sun",
                "predict",
                str(path),
                "--model",
                str(uint16_model),
                "--out",
                str(out),
                "--no-uncertainty",
                "--threads",
                "2",
            ]
        )
        == 0
    )
    labels = read_volume(out)
    assert labels.shape == data.shape and labels.dtype == np.uint8
    assert nib.load(out).header.endianness == nib.volumeutils.native_code
    if name.endswith(".nii"):  # the labels lie where the input lies
        np.testing.assert_allclose(nib.load(out).affine, LAS_AFFINE, atol=1e-7)
    if name.endswith(".nii"):  # the labels lie where the input lies
        np.testing.assert_allclose(nib.load(out).affine, LAS_AFFINE, atol=1e-7)
    # The same prediction as for the native copy of the volume.
    native = tmp_path / "native.tif"
    write_volume(native, data.astype(np.uint16))
    assert (
        main(
            [
                "sun",
                "predict",
                str(native),
                "--model",
                str(uint16_model),
                "--out",
                str(tmp_path / "n.nii"),
                "--no-uncertainty",
                "--threads",
                "2",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(labels.data, read_volume(tmp_path / "n.nii").data)
