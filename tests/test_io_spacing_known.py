"""Readers say whether the file gave a voxel size (``Volume.spacing_known``), so 1 µm is not mistaken for "none"."""

from __future__ import annotations

import os

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


# Real files that installed packages ship: the voxel size read must be the one the header
# gives, read here independently with the package that wrote the format.
NIFTI_UNIT_UM = {"mm": 1000.0, "micron": 1.0, "meter": 1e6, "unknown": 1000.0}  # unknown means mm


def _shipped(path) -> str:
    if not os.path.exists(path):
        pytest.skip(f"{path} is not installed")
    return str(path)


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz"])
def test_nibabel_sample_files_give_their_header_voxel_size(name):
    import nibabel.testing

    path = _shipped(os.path.join(nibabel.testing.data_path, name))
    header = nib.load(path).header
    unit = NIFTI_UNIT_UM[header.get_xyzt_units()[0]]
    expected = tuple(float(z) * unit for z in header.get_zooms()[:3][::-1])  # (z, y, x)
    volume = read_volume(path)
    assert volume.spacing_known
    assert volume.spacing == pytest.approx(expected)
    assert volume.shape == nib.load(path).shape[::-1]


def test_nibabel_4d_sample_is_refused_in_one_line_naming_the_file():
    import nibabel.testing

    from unified_framework.errors import InputError

    path = _shipped(os.path.join(nibabel.testing.data_path, "example4d.nii.gz"))
    with pytest.raises(InputError, match=r"example4d\.nii\.gz: 4D NIfTI with 2 volumes") as err:
        read_volume(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_sample_files_give_their_pixel_spacing(name):
    import pydicom
    from pydicom.data import get_testdata_file

    path = _shipped(get_testdata_file(name))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    volume = read_volume(path)
    assert volume.spacing_known
    assert volume.shape == (header.Rows, header.Columns)
    # PixelSpacing is (row, column) in mm: the (y, x) size in µm
    assert volume.spacing == pytest.approx(tuple(float(s) * 1000 for s in header.PixelSpacing))


def _skimage_file(name: str) -> str:
    import skimage.data

    return _shipped(os.path.join(os.path.dirname(skimage.data.__file__), name))


@pytest.mark.parametrize("name", ["camera.png", "cell.png", "moon.png", "retina.jpg"])
def test_skimage_sample_images_know_a_size_exactly_when_they_give_dpi(name):
    path = _skimage_file(name)
    with Image.open(path) as image:
        dpi = image.info.get("dpi")
    volume = read_volume(path)
    if dpi is None:
        assert not volume.spacing_known and volume.spacing == (1.0, 1.0)
    else:
        assert volume.spacing_known
        assert volume.spacing == pytest.approx((25400 / float(dpi[1]), 25400 / float(dpi[0])))


def test_skimage_multipage_tiff_takes_its_resolution_tags():
    path = _skimage_file("multipage.tif")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        x_num, x_den = page.tags["XResolution"].value
        y_num, y_den = page.tags["YResolution"].value
        unit = page.tags["ResolutionUnit"].value
    per_unit_um = {tifffile.RESUNIT.INCH: 25400.0, tifffile.RESUNIT.CENTIMETER: 10000.0}[unit]
    volume = read_volume(path)
    assert volume.spacing_known and volume.shape == (2, 15, 10)
    # the tags give only the pixel size in the plane (pixels per unit); z stays 1
    assert volume.spacing == pytest.approx(
        (1.0, per_unit_um * y_den / y_num, per_unit_um * x_den / x_num)
    )
