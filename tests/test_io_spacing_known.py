"""Readers say whether the file gave a voxel size (``Volume.spacing_known``), so 1 µm is not mistaken for "none"."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from unified_framework.io import Volume, read_volume, write_volume

DATA = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz", ".zarr", ".h5"])
def test_a_written_voxel_size_of_exactly_one_micrometre_is_known(tmp_path, suffix):
    path = tmp_path / f"scan{suffix}"
    write_volume(path, Volume(DATA, (1.0, 1.0, 1.0)))
    volume = read_volume(path)
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.spacing_known


def test_tiff_without_any_size_is_unknown(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", DATA, photometric="minisblack")
    volume = read_volume(tmp_path / "plain.tif")
    assert volume.spacing == (1.0, 1.0, 1.0) and not volume.spacing_known
    tifffile.imwrite(tmp_path / "image.tif", DATA[0])
    assert not read_volume(tmp_path / "image.tif").spacing_known


def test_tiff_resolution_tags_are_a_known_size(tmp_path):
    tifffile.imwrite(
        tmp_path / "res.tif", DATA[0], resolution=(10000, 10000), resolutionunit="CENTIMETER"
    )
    volume = read_volume(tmp_path / "res.tif")
    assert volume.spacing == pytest.approx((1.0, 1.0)) and volume.spacing_known


def test_nifti_always_has_a_size(tmp_path):
    nib.save(nib.Nifti1Image(DATA.T.astype(np.float32), np.eye(4)), tmp_path / "s.nii.gz")
    volume = read_volume(tmp_path / "s.nii.gz")
    assert volume.spacing == (1000.0, 1000.0, 1000.0) and volume.spacing_known


def test_zarr_and_hdf5_without_spacing_attributes_are_unknown(tmp_path):
    zarr.open_array(tmp_path / "bare.zarr", mode="w", shape=DATA.shape, dtype=DATA.dtype)[:] = DATA
    assert not read_volume(tmp_path / "bare.zarr").spacing_known
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f["scan"] = DATA
    assert not read_volume(tmp_path / "bare.h5").spacing_known


def test_png_with_and_without_dpi(tmp_path):
    image = Image.fromarray(np.zeros((6, 6, 3), np.uint8))
    image.save(tmp_path / "bare.png")
    image.save(tmp_path / "dpi.png", dpi=(25400, 25400))
    assert not read_volume(tmp_path / "bare.png").spacing_known
    with_dpi = read_volume(tmp_path / "dpi.png")
    assert with_dpi.spacing == pytest.approx((1.0, 1.0)) and with_dpi.spacing_known


def test_volumes_made_in_code_count_as_known():
    assert Volume(DATA).spacing_known
