"""Surface distances against a brute-force pairwise reference and SimpleITK, with anisotropic spacing."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from unified_framework.errors import InputError
from unified_framework.metrics.surface import (
    surface_distances,
    surface_mask,
    surface_metrics,
    surface_scores,
)

SPACING = (2.0, 0.7, 1.3)


def blobs(seed, shape=(10, 12, 14), density=0.03):
    rng = np.random.default_rng(seed)
    return ndi.binary_dilation(rng.random(shape) < density, iterations=1)


def brute_surface(mask, connectivity):
    """Surface voxels by explicit neighbour look-up on a zero-padded copy."""
    padded = np.pad(mask, 1)
    offsets = [
        d
        for d in itertools.product((-1, 0, 1), repeat=mask.ndim)
        if 0 < sum(map(abs, d)) <= connectivity
    ]
    touches_background = np.zeros(mask.shape, dtype=bool)
    for offset in offsets:
        window = tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))
        touches_background |= ~padded[window]
    return mask & touches_background


def brute_metrics(pred, gt, spacing, connectivity=1, percentile=95):
    """HD, percentile HD (max of the directed percentiles) and ASSD from all pairwise distances."""
    pred_points = np.argwhere(brute_surface(pred, connectivity)) * np.asarray(spacing)
    gt_points = np.argwhere(brute_surface(gt, connectivity)) * np.asarray(spacing)
    pairwise = cdist(pred_points, gt_points)
    pred_to_gt, gt_to_pred = pairwise.min(axis=1), pairwise.min(axis=0)
    both = np.concatenate([pred_to_gt, gt_to_pred])
    return {
        "hausdorff": both.max(),
        "hd95": max(np.percentile(pred_to_gt, percentile), np.percentile(gt_to_pred, percentile)),
        "assd": both.mean(),
    }


def sitk_image(mask, spacing):
    """Zero-padded SimpleITK image (its spacing is x, y, z: numpy order reversed)."""
    image = sitk.GetImageFromArray(np.pad(mask, 1).astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return image


def sphere(shape, centre, radius, spacing):
    grid = np.indices(shape, dtype=float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius**2


@pytest.mark.parametrize("connectivity", [1, 3])
@pytest.mark.parametrize("seed", range(4))
def test_surface_metrics_match_brute_force_pairwise_distances(seed, connectivity):
    pred, gt = blobs(seed), blobs(seed + 100)
    ours = surface_metrics(pred, gt, spacing=SPACING, connectivity=connectivity)
    reference = brute_metrics(pred, gt, SPACING, connectivity)
    for name in reference:
        assert ours[name] == pytest.approx(reference[name], rel=1e-12), name


@pytest.mark.parametrize("connectivity", [1, 3])
def test_surface_mask_matches_neighbour_definition(connectivity):
    mask = blobs(9, density=0.1)
    mask[0] = True  # touching the border: the border counts as background
    np.testing.assert_array_equal(
        surface_mask(mask, connectivity), brute_surface(mask, connectivity)
    )


def test_surface_matches_simpleitk_binary_contour():
    mask = blobs(4, density=0.08)
    contour = sitk.BinaryContour(
        sitk_image(mask, SPACING), fullyConnected=False, backgroundValue=0, foregroundValue=1
    )
    np.testing.assert_array_equal(
        surface_mask(mask, 1), sitk.GetArrayFromImage(contour)[1:-1, 1:-1, 1:-1].astype(bool)
    )


@pytest.mark.parametrize("seed", range(4))
def test_hausdorff_matches_simpleitk_on_surfaces(seed):
    pred, gt = blobs(seed), blobs(seed + 50)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(
        sitk.BinaryContour(sitk_image(pred, SPACING), fullyConnected=False),
        sitk.BinaryContour(sitk_image(gt, SPACING), fullyConnected=False),
    )
    assert surface_metrics(pred, gt, SPACING)["hausdorff"] == pytest.approx(
        hausdorff.GetHausdorffDistance(), rel=1e-9
    )


def test_hausdorff_matches_simpleitk_on_filled_spheres():
    # For overlapping convex objects the Hausdorff distance of the filled sets equals that of the surfaces.
    shape, spacing = (24, 30, 28), (1.6, 0.8, 1.0)
    pred = sphere(shape, (11, 14, 13), 8.0, spacing)
    gt = sphere(shape, (12, 16, 14), 9.5, spacing)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(sitk_image(pred, spacing), sitk_image(gt, spacing))
    assert surface_metrics(pred, gt, spacing)["hausdorff"] == pytest.approx(
        hausdorff.GetHausdorffDistance(), rel=1e-9
    )


def test_hd95_and_assd_match_simpleitk_maurer_distance_maps():
    shape, spacing = (24, 30, 28), (1.6, 0.8, 1.0)
    pred = sphere(shape, (11, 14, 13), 8.0, spacing) & ~sphere(shape, (11, 20, 13), 3.0, spacing)
    gt = sphere(shape, (12, 16, 14), 9.5, spacing)
    contours = [
        sitk.BinaryContour(sitk_image(m, spacing), fullyConnected=False) for m in (pred, gt)
    ]
    directed = []
    for source, target in (contours, contours[::-1]):
        distance = sitk.SignedMaurerDistanceMap(
            target, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        directed.append(
            np.abs(sitk.GetArrayFromImage(distance))[sitk.GetArrayFromImage(source).astype(bool)]
        )
    ours = surface_metrics(pred, gt, spacing)
    # Maurer maps are float32.
    assert ours["hd95"] == pytest.approx(max(np.percentile(d, 95) for d in directed), rel=1e-5)
    assert ours["assd"] == pytest.approx(np.concatenate(directed).mean(), rel=1e-5)


def test_empty_mask_conventions():
    empty = np.zeros((5, 5, 5), dtype=bool)
    one = empty.copy()
    one[2, 2, 2] = True
    assert all(np.isnan(v) for v in surface_metrics(empty, empty).values())
    assert surface_metrics(one, empty) == dict.fromkeys(("hausdorff", "hd95", "assd"), np.inf)
    assert surface_metrics(empty, one) == dict.fromkeys(("hausdorff", "hd95", "assd"), np.inf)
    pred_to_gt, gt_to_pred = surface_distances(one, empty)
    assert pred_to_gt.tolist() == [np.inf] and gt_to_pred.size == 0


def test_single_voxels_give_their_physical_distance():
    pred = np.zeros((6, 7, 8), dtype=bool)
    gt = pred.copy()
    pred[1, 2, 3] = True
    gt[4, 6, 3] = True
    expected = np.hypot(3 * SPACING[0], 4 * SPACING[1])
    result = surface_metrics(pred, gt, SPACING)
    assert result == pytest.approx(dict.fromkeys(("hausdorff", "hd95", "assd"), expected))
    assert surface_metrics(pred, pred, SPACING) == dict.fromkeys(("hausdorff", "hd95", "assd"), 0.0)


def test_full_volume_masks_have_a_surface_on_the_border():
    full = np.ones((4, 5, 6), dtype=bool)
    assert surface_mask(full).sum() == full.size - 2 * 3 * 4
    shrunk = full.copy()
    shrunk[-1] = False
    assert surface_metrics(full, full, SPACING)["hausdorff"] == 0.0
    assert surface_metrics(shrunk, full, SPACING) == pytest.approx(
        brute_metrics(shrunk, full, SPACING)
    )


def label_image(seed, shape=(12, 13, 14)):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for label in (1, 2, 3):
        labels[ndi.binary_dilation(rng.random(shape) < 0.02, iterations=1)] = label
    return labels


@pytest.mark.parametrize("values", [(0, 1, 2, 3), (0, -4, 9, 2**30)])
def test_per_class_scores_match_brute_force_on_full_masks(values):
    lut = np.asarray(values)
    pred, gt = lut[label_image(1)], lut[label_image(2)]
    labels = list(values[1:]) + [values[0], 12345]  # background and an absent label too
    ours = surface_scores(pred, gt, labels, SPACING, percentile=90)
    for i, label in enumerate(labels):
        if label == 12345:
            assert all(np.isnan(ours[name][i]) for name in ours)
            continue
        reference = brute_metrics(pred == label, gt == label, SPACING, percentile=90)
        for name, value in reference.items():
            assert ours[name][i] == pytest.approx(value, rel=1e-12), (label, name)


def test_shape_and_spacing_errors():
    with pytest.raises(InputError, match="shape"):
        surface_metrics(np.ones((3, 3, 3), bool), np.ones((3, 3, 4), bool))
    with pytest.raises(InputError, match="spacing"):
        surface_metrics(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), spacing=(1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        surface_metrics(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="percentile"):
        surface_scores(np.ones((3, 3, 3), int), np.ones((3, 3, 3), int), [1], percentile=101)


def test_two_dimensional_images():
    pred, gt = np.zeros((8, 9), bool), np.zeros((8, 9), bool)
    pred[2:5, 2:6], gt[3:6, 2:7] = True, True
    assert surface_metrics(pred, gt, (0.5, 2.0)) == pytest.approx(
        brute_metrics(pred, gt, (0.5, 2.0))
    )
