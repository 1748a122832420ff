"""Overlap metrics against scikit-learn and SimpleITK on random and edge-case label images."""

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn import metrics as skm

from unified_framework.metrics import overlap
from unified_framework.metrics.overlap import confusion_matrix, overlap_scores, present_labels


def random_pair(seed, shape=(9, 11, 13), n_labels=4, agreement=0.6):
    """Two correlated random label images: ``pred`` copies ``gt`` on ~``agreement`` of the voxels."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, n_labels, size=shape)
    pred = np.where(rng.random(shape) < agreement, gt, rng.integers(0, n_labels, size=shape))
    return pred, gt


def edge_cases():
    shape = (5, 6, 7)
    zeros = np.zeros(shape, dtype=np.uint8)
    one_voxel = zeros.copy()
    one_voxel[2, 3, 4] = 1
    other_voxel = zeros.copy()
    other_voxel[0, 0, 0] = 1
    three = np.full(shape, 3, dtype=np.int32)
    missing_in_gt, gt_two = random_pair(1, shape, n_labels=3)
    missing_in_gt[0, 0, :3] = 5  # label 5 only in the prediction
    return {
        "both empty": (zeros, zeros),
        "pred empty": (zeros, one_voxel),
        "gt empty": (one_voxel, zeros),
        "single voxel match": (one_voxel, one_voxel),
        "single voxel miss": (other_voxel, one_voxel),
        "all same": (three, three),
        "class only in pred": (missing_in_gt, gt_two),
        "class only in gt": (gt_two, missing_in_gt),
    }


def sklearn_jaccard(y_true, y_pred, labels, zero_division):
    """``jaccard_score`` accepts only 0 or 1 for ``zero_division``: where those two
    disagree the score is undefined and gets ``zero_division``."""
    as_zero, as_one = (
        skm.jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=z)
        for z in (0, 1)
    )
    return np.where(as_zero != as_one, zero_division, as_zero)


def sklearn_scores(pred, gt, labels, zero_division):
    kwargs = dict(labels=labels, average=None, zero_division=zero_division)
    y_true, y_pred = gt.ravel(), pred.ravel()
    return {
        "dice": skm.f1_score(y_true, y_pred, **kwargs),
        "f1": skm.f1_score(y_true, y_pred, **kwargs),
        "iou": sklearn_jaccard(y_true, y_pred, labels, zero_division),
        "precision": skm.precision_score(y_true, y_pred, **kwargs),
        "recall": skm.recall_score(y_true, y_pred, **kwargs),
    }


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matrix_matches_sklearn(seed):
    pred, gt = random_pair(seed)
    matrix, labels = confusion_matrix(pred, gt)
    np.testing.assert_array_equal(labels, np.union1d(np.unique(pred), np.unique(gt)))
    np.testing.assert_array_equal(
        matrix, skm.confusion_matrix(gt.ravel(), pred.ravel(), labels=labels)
    )


def test_confusion_matrix_with_label_subset_ignores_other_voxels_like_sklearn():
    pred, gt = random_pair(7, n_labels=5)
    matrix, labels = confusion_matrix(pred, gt, labels=[3, 1])
    np.testing.assert_array_equal(labels, [1, 3])
    np.testing.assert_array_equal(
        matrix, skm.confusion_matrix(gt.ravel(), pred.ravel(), labels=[1, 3])
    )


@pytest.mark.parametrize("empty_score", [np.nan, 1.0, 0.0])
@pytest.mark.parametrize("seed", range(3))
def test_scores_match_sklearn_on_random_images(seed, empty_score):
    pred, gt = random_pair(seed, n_labels=5)
    labels = [1, 2, 4, 7]  # 7 is absent from both: every ratio gets empty_score
    ours = overlap_scores(pred, gt, labels=labels, empty_score=empty_score)
    for name, reference in sklearn_scores(pred, gt, labels, empty_score).items():
        np.testing.assert_allclose(ours[name], reference, err_msg=name)
    assert np.isnan(ours["dice"][-1]) if np.isnan(empty_score) else ours["dice"][-1] == empty_score


@pytest.mark.parametrize("case", list(edge_cases()))
@pytest.mark.parametrize("empty_score", [np.nan, 1.0])
def test_scores_match_sklearn_on_edge_cases(case, empty_score):
    pred, gt = edge_cases()[case]
    labels = sorted(set(np.unique(pred)) | set(np.unique(gt)) | {1})
    ours = overlap_scores(pred, gt, labels=labels, empty_score=empty_score)
    for name, reference in sklearn_scores(pred, gt, labels, empty_score).items():
        np.testing.assert_allclose(ours[name], reference, err_msg=f"{case}: {name}")
    np.testing.assert_array_equal(
        ours["gt_voxels"], [np.count_nonzero(gt == label) for label in labels]
    )
    np.testing.assert_array_equal(
        ours["pred_voxels"], [np.count_nonzero(pred == label) for label in labels]
    )


def test_default_labels_exclude_background_and_include_pred_only_labels():
    pred, gt = edge_cases()["class only in pred"]
    scores = overlap_scores(pred, gt)
    np.testing.assert_array_equal(scores["label"], [1, 2, 5])
    assert scores["gt_voxels"][-1] == 0 and scores["dice"][-1] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_dice_and_jaccard_match_simpleitk_label_overlap(seed):
    pred, gt = random_pair(seed, shape=(12, 10, 8), n_labels=4)
    measures = sitk.LabelOverlapMeasuresImageFilter()
    # SimpleITK's first image is the source (prediction), the second the target (ground truth).
    measures.Execute(
        sitk.GetImageFromArray(pred.astype(np.uint16)), sitk.GetImageFromArray(gt.astype(np.uint16))
    )
    labels = [1, 2, 3]
    ours = overlap_scores(pred, gt, labels=labels)
    np.testing.assert_allclose(
        ours["dice"], [measures.GetDiceCoefficient(label) for label in labels]
    )
    np.testing.assert_allclose(
        ours["iou"], [measures.GetJaccardCoefficient(label) for label in labels]
    )


def test_large_and_negative_label_values_use_the_sorted_path():
    pred, gt = random_pair(3, n_labels=3)
    values = np.array([-7, 5, 10**9])
    pred, gt = values[pred], values[gt]
    labels = values.tolist()
    ours = overlap_scores(pred, gt, labels=labels)
    for name, reference in sklearn_scores(pred, gt, labels, np.nan).items():
        np.testing.assert_allclose(ours[name], reference, err_msg=name)
    np.testing.assert_array_equal(present_labels(pred, gt), np.union1d(pred, gt))


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.uint64])
def test_integer_dtypes(dtype):
    pred, gt = random_pair(4, n_labels=4)
    pred, gt = pred.astype(dtype), gt.astype(dtype)
    matrix, labels = confusion_matrix(pred, gt)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(gt.ravel(), pred.ravel()))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])


def test_chunked_counting_gives_the_same_matrix(monkeypatch):
    pred, gt = random_pair(5, shape=(20, 21, 22))
    whole, labels = confusion_matrix(pred, gt)
    monkeypatch.setattr(overlap, "CHUNK_VOXELS", 1000)  # many partial chunks, last one short
    chunked, _ = confusion_matrix(pred, gt)
    np.testing.assert_array_equal(chunked, whole)
    monkeypatch.setattr(overlap, "MAX_DENSE_VALUES", 1)  # the label-indexed path, chunked too
    np.testing.assert_array_equal(confusion_matrix(pred, gt)[0], whole)
    assert whole.sum() == pred.size


def test_volumes_use_anisotropic_spacing():
    pred, gt = random_pair(2, n_labels=3)
    spacing = (2.5, 0.5, 1.5)
    scores = overlap_scores(pred, gt, labels=[1, 2], spacing=spacing)
    voxel = 2.5 * 0.5 * 1.5
    for i, label in enumerate([1, 2]):
        gt_volume = np.count_nonzero(gt == label) * voxel
        pred_volume = np.count_nonzero(pred == label) * voxel
        assert scores["gt_volume"][i] == pytest.approx(gt_volume)
        assert scores["volume_difference"][i] == pytest.approx(pred_volume - gt_volume)
        assert scores["abs_volume_difference"][i] == pytest.approx(abs(pred_volume - gt_volume))
        assert scores["relative_volume_difference"][i] == pytest.approx(
            (pred_volume - gt_volume) / gt_volume
        )


def test_relative_volume_difference_conventions_for_empty_ground_truth():
    cases = edge_cases()
    assert overlap_scores(*cases["both empty"], labels=[1])["relative_volume_difference"][0] == 0.0
    assert overlap_scores(*cases["gt empty"], labels=[1])["relative_volume_difference"][0] == np.inf
    assert overlap_scores(*cases["pred empty"], labels=[1])["relative_volume_difference"][0] == -1.0
