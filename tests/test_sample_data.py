"""The implant phantom, the sample catalogue and ``mdlma sample``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from unified_framework.cli.main import main
from unified_framework.data import CLASS_NAMES, list_samples, load_sample, make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import read_volume

SHAPE = (48, 56, 56)


@pytest.fixture(scope="module")
def phantom():
    return make_implant_phantom(SHAPE, seed=0)


def test_all_classes_present_with_sane_fractions(phantom):
    image, labels = phantom
    assert image.shape == labels.shape == SHAPE
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
    assert len(fractions) == len(CLASS_NAMES) == 4
    assert 0.4 < fractions[0] < 0.85  # background dominates
    assert 0.1 < fractions[1] < 0.45  # bone
    assert 0.005 < fractions[2] < 0.1  # residual implant
    assert 0.005 < fractions[3] < 0.1  # degradation layer


def test_grey_values_order_classes():
    # Without blur: partial volume pulls the thin layer towards the bright implant.
    image, labels = make_implant_phantom(SHAPE, seed=0, blur=0)
    means = [float(image[labels == c].mean()) for c in range(4)]
    # background < degradation layer < bone < residual implant (attenuation-like values)
    assert means[0] < means[3] < means[1] < means[2]


def test_implant_lies_inside_the_bone(phantom):
    _, labels = phantom
    implant = labels >= 2
    for z in np.flatnonzero(implant.any(axis=(1, 2))):
        enclosed = ndimage.binary_fill_holes(labels[z] == 1)
        assert enclosed[implant[z]].all(), f"implant outside the cortical shell in slice {z}"
    # The screw runs along z through the centre and ends in a tip before the last slices.
    zs = np.flatnonzero(implant.any(axis=(1, 2)))
    assert zs[0] == 0 and zs[-1] < SHAPE[0] - 3
    cy, cx = ndimage.center_of_mass(implant[0])
    assert abs(cy - (SHAPE[1] - 1) / 2) < 3 and abs(cx - (SHAPE[2] - 1) / 2) < 3


def test_degradation_layer_wraps_the_residual_implant(phantom):
    _, labels = phantom
    residual, layer = labels == 2, labels == 3
    surface = residual & ~ndimage.binary_erosion(residual, iterations=1, border_value=1)
    touching = ndimage.binary_dilation(layer, iterations=1)
    # Most of the residual implant's surface (away from the cut face z=0) touches corrosion products.
    surface[0] = False
    assert touching[surface].mean() > 0.8
    # ...and corrosion products stay close to the residual implant.
    distance = ndimage.distance_transform_edt(~residual)
    assert np.percentile(distance[layer], 95) <= 6


def test_same_seed_same_volume_other_seed_other_anatomy():
    a_image, a_labels = make_implant_phantom((24, 32, 32), seed=4)
    b_image, b_labels = make_implant_phantom((24, 32, 32), seed=4)
    c_image, c_labels = make_implant_phantom((24, 32, 32), seed=5)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert (a_labels != c_labels).mean() > 0.05


def test_noise_and_rings_leave_geometry_unchanged():
    _, clean = make_implant_phantom((24, 32, 32), seed=2, noise=0, rings=0, blur=0)
    _, noisy = make_implant_phantom((24, 32, 32), seed=2, noise=0.2, rings=0.1, blur=1.5)
    np.testing.assert_array_equal(clean, noisy)


def test_anisotropic_shape_and_spacing_are_honoured():
    image, labels = make_implant_phantom((20, 40, 30), seed=1)
    assert image.shape == labels.shape == (20, 40, 30)
    # Same physical field of view sampled with half as many, twice as thick z slices:
    _, fine = make_implant_phantom((64, 64, 64), seed=1, spacing=(1, 1, 1))
    _, coarse = make_implant_phantom((32, 64, 64), seed=1, spacing=(2, 1, 1))
    np.testing.assert_allclose(
        np.bincount(coarse.ravel(), minlength=4) / coarse.size,
        np.bincount(fine.ravel(), minlength=4) / fine.size,
        rtol=0.25,
    )
    # Anisotropic in-plane voxels keep the screw round in physical units.
    _, stretched = make_implant_phantom((16, 80, 40), seed=1, spacing=(1, 1, 2))
    ys, xs = np.nonzero(stretched[2] >= 2)
    extent_y, extent_x = (ys.max() - ys.min() + 1) * 1.0, (xs.max() - xs.min() + 1) * 2.0
    assert 0.8 < extent_y / extent_x < 1.25


def test_ring_artefacts_are_concentric_about_the_axis():
    args = dict(shape=(16, 64, 64), seed=3, noise=0, blur=0)
    with_rings, _ = make_implant_phantom(rings=0.05, **args)
    without, _ = make_implant_phantom(rings=0, **args)
    rings = (with_rings - without)[5]
    assert np.abs(rings).max() > 0.05
    y, x = np.indices(rings.shape)
    radius = np.rint(np.hypot(y - 31.5, x - 31.5)).astype(int)
    sums, counts = np.bincount(radius.ravel(), rings.ravel()), np.bincount(radius.ravel())
    profile = sums / np.maximum(counts, 1)
    # The pattern varies along the radius but is constant on each ring.
    within_ring = np.sqrt(
        np.bincount(radius.ravel(), (rings - profile[radius]).ravel() ** 2) / np.maximum(counts, 1)
    )
    assert profile.std() > 0.02
    assert np.median(within_ring[counts > 0]) < 0.2 * profile.std()


def test_noise_strength_is_honoured():
    clean, labels = make_implant_phantom((24, 48, 48), seed=0, noise=0, rings=0, blur=0)
    noisy, _ = make_implant_phantom((24, 48, 48), seed=0, noise=0.1, rings=0, blur=0)
    difference = (noisy - clean)[labels == 2]
    assert 0.07 < difference.std() < 0.13


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape=(4, 64, 64)),
        dict(shape=(8, 8)),
        dict(spacing=(1, 0, 1)),
        dict(noise=-1),
        dict(rings=float("nan")),
    ],
)
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError, match="phantom"):
        make_implant_phantom(**kwargs)


def test_256_cubed_phantom_is_made(tmp_path):
    # Not a timing test (see the docs); checks that the vectorised path handles a large size.
    image, labels = make_implant_phantom((256, 256, 256), seed=0)
    assert image.shape == (256, 256, 256) and set(np.unique(labels)) == {0, 1, 2, 3}


def test_every_listed_sample_loads():
    names = [s.name for s in list_samples()]
    assert names[:2] == ["implant", "implant-labels"]
    assert "ct-small" in names  # pydicom is a dependency and ships CT_small.dcm
    for sample in list_samples():
        volume = load_sample(sample.name)
        assert len(volume.spatial_shape) == sample.ndim  # a colour image is 2D with a channel axis
        assert np.isfinite(np.asarray(volume.data, dtype=np.float64)).all()
    labels = load_sample("implant-labels", shape=(16, 32, 32), seed=2)
    _, expected = make_implant_phantom((16, 32, 32), seed=2)
    np.testing.assert_array_equal(labels.data, expected)
    assert labels.spacing == (5.0, 5.0, 5.0)


def test_unknown_sample_or_parameters_raise():
    with pytest.raises(InputError, match="nosuch"):
        load_sample("nosuch")
    with pytest.raises(InputError, match="no parameters"):
        load_sample("cell", shape=(3, 3))


@pytest.mark.parametrize("image_name,labels_name", [("p.tif", "g.h5"), ("p.zarr", "g.nii.gz")])
def test_cli_writes_readable_files(tmp_path, capsys, image_name, labels_name):
    out, gt = tmp_path / image_name, tmp_path / labels_name
    status = main(
        [
            "sample",
            "implant",
            str(out),
            "--gt",
            str(gt),
            "--shape",
            "16",
            "24",
            "20",
            "--seed",
            "7",
            "--spacing",
            "4",
            "2",
            "2",
        ]
    )
    assert status == 0
    image, labels = make_implant_phantom((16, 24, 20), seed=7, spacing=(4, 2, 2))
    read_image, read_labels = read_volume(out), read_volume(gt)
    np.testing.assert_array_equal(read_image.data, image)
    np.testing.assert_array_equal(read_labels.data, labels)
    np.testing.assert_allclose(read_image.spacing, (4, 2, 2))
    np.testing.assert_allclose(read_labels.spacing, (4, 2, 2))


def test_cli_list_and_save(tmp_path, capsys):
    assert main(["sample", "list"]) == 0
    listing = capsys.readouterr().out
    assert "implant" in listing and "ct-small" in listing
    assert main(["sample", "save", "shepp-logan", str(tmp_path / "s.tif")]) == 0
    assert read_volume(tmp_path / "s.tif").shape == (400, 400)
    assert main(["sample", "save", "ihc", str(tmp_path / "ihc.ome.tif")]) == 0
    ihc = read_volume(tmp_path / "ihc.ome.tif")
    assert (
        ihc.shape == (512, 512, 3)
        and ihc.axes == "yxc"
        and ihc.spacing == load_sample("ihc").spacing
    )
    assert main(["sample", "save", "nosuch", str(tmp_path / "x.tif")]) == 2
    assert "nosuch" in capsys.readouterr().err
