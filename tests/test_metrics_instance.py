"""Instance matching against a brute-force matcher that tries every one-to-one assignment."""

import itertools

import numpy as np
import pytest

from unified_framework.errors import InputError
from unified_framework.metrics.instance import instance_scores, iou_matrix, match_instances

THRESHOLDS = (0.1, 0.3, 0.5, 0.75)


def random_boxes(rng, shape, n_objects):
    corners = np.stack(
        [rng.integers(0, shape[0] - 3, n_objects), rng.integers(0, shape[1] - 3, n_objects)], axis=1
    )
    return np.concatenate([corners, rng.integers(2, 7, size=(n_objects, 2))], axis=1)


def paint(boxes, shape, ids):
    """Label image of rectangles (y, x, h, w); later ones paint over earlier ones."""
    image = np.zeros(shape, dtype=np.int64)
    for (y, x, h, w), obj in zip(boxes, ids):
        image[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = obj
    return image


def random_instances(seed, shape=(14, 16), n_objects=4, ids=None):
    rng = np.random.default_rng(seed)
    ids = list(range(1, n_objects + 1)) if ids is None else ids
    return paint(random_boxes(rng, shape, len(ids)), shape, ids)


def perturbed_pair(seed, shape=(16, 18), n_objects=4):
    """Ground truth and a prediction made of jittered copies of its objects plus one spurious object."""
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, shape, n_objects)
    jittered = boxes + rng.integers(-1, 2, size=boxes.shape)
    predicted = np.concatenate(
        [jittered[rng.permutation(n_objects)[:-1]], random_boxes(rng, shape, 1)]
    )
    gt = paint(boxes, shape, range(1, n_objects + 1))
    pred = paint(predicted, shape, rng.permutation(np.arange(10, 10 + n_objects)))
    return pred, gt


def brute_force(pred, gt, threshold):
    """Best one-to-one matching by enumeration: most pairs with IoU >= threshold, then largest IoU sum."""
    true_ids = [i for i in np.unique(gt) if i != 0]
    pred_ids = [j for j in np.unique(pred) if j != 0]
    iou = np.zeros((len(true_ids), len(pred_ids)))
    for a, i in enumerate(true_ids):
        for b, j in enumerate(pred_ids):
            intersection = np.sum((gt == i) & (pred == j))
            iou[a, b] = intersection / np.sum((gt == i) | (pred == j))
    best = (0, 0.0)
    # Give every ground-truth object a distinct prediction or none.
    options = list(range(len(pred_ids))) + [None] * len(true_ids)
    for assignment in set(itertools.permutations(options, len(true_ids))):
        matched = [
            iou[a, b] for a, b in enumerate(assignment) if b is not None and iou[a, b] >= threshold
        ]
        best = max(best, (len(matched), float(np.sum(matched))))
    return len(true_ids), len(pred_ids), best, iou


def check_against_brute_force(pred, gt, method):
    ours = instance_scores(pred, gt, THRESHOLDS, method=method)
    for row, threshold in zip(ours, THRESHOLDS):
        n_true, n_pred, (tp, iou_sum), _ = brute_force(pred, gt, threshold)
        fp, fn = n_pred - tp, n_true - tp
        assert (row["n_true"], row["n_pred"], row["tp"], row["fp"], row["fn"]) == (
            n_true,
            n_pred,
            tp,
            fp,
            fn,
        )
        if tp:
            assert row["mean_matched_iou"] == pytest.approx(iou_sum / tp)
            assert row["panoptic_quality"] == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2))
            assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
            assert row["precision"] == pytest.approx(tp / n_pred)
            assert row["recall"] == pytest.approx(tp / n_true)


@pytest.mark.parametrize("seed", range(10))
def test_optimal_matching_equals_brute_force(seed):
    check_against_brute_force(*perturbed_pair(seed), "optimal")
    check_against_brute_force(
        random_instances(seed + 1000, n_objects=5), random_instances(seed, n_objects=4), "optimal"
    )


def test_matching_of_shifted_copies_equals_brute_force():
    # Realistic case: the prediction is the ground truth shifted by one pixel, with one object lost.
    gt = random_instances(3, shape=(20, 20), n_objects=5)
    pred = np.roll(gt, 1, axis=1) * 3  # different ids
    pred[pred == 6] = 0
    check_against_brute_force(pred, gt, "optimal")
    check_against_brute_force(pred, gt, "greedy")


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_optimal_above_one_half(seed):
    pred, gt = perturbed_pair(seed)
    for greedy, optimal in zip(
        instance_scores(pred, gt, (0.5, 0.8), "greedy"), instance_scores(pred, gt, (0.5, 0.8))
    ):
        assert greedy == optimal


def test_optimal_beats_greedy_when_overlaps_are_ambiguous():
    # Ground truth A, B; prediction X overlaps A best but also B, Y overlaps only A.
    iou = np.array([[0.5, 0.3], [0.3, 0.0]])
    rows, cols, scores = match_instances(iou, 0.25, "optimal")
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    assert scores.sum() == pytest.approx(0.6)
    rows, cols, _ = match_instances(iou, 0.25, "greedy")
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]


def test_iou_matrix_matches_pairwise_masks_with_large_ids():
    gt = random_instances(5, n_objects=3, ids=[7, 10**9, 3])
    pred = random_instances(6, n_objects=4, ids=[2**40, 1, 5, 9])
    iou, true_ids, pred_ids = iou_matrix(pred, gt)
    _, _, _, reference = brute_force(pred, gt, 0.5)
    np.testing.assert_array_equal(true_ids, [i for i in np.unique(gt) if i])
    np.testing.assert_array_equal(pred_ids, [j for j in np.unique(pred) if j])
    np.testing.assert_allclose(iou.toarray(), reference)


def test_identical_and_empty_images():
    gt = random_instances(2, n_objects=4)
    perfect = instance_scores(gt * 2, gt, (0.5, 0.99))
    for row in perfect:
        assert row["tp"] == len(np.unique(gt)) - 1
        assert row["f1"] == row["panoptic_quality"] == row["mean_matched_iou"] == 1.0
    empty = np.zeros_like(gt)
    nothing_predicted = instance_scores(empty, gt)[0]
    assert nothing_predicted["recall"] == 0.0 and np.isnan(nothing_predicted["precision"])
    assert nothing_predicted["fn"] == perfect[0]["n_true"]
    both_empty = instance_scores(empty, empty, empty_score=1.0)[0]
    assert both_empty["f1"] == 1.0 and both_empty["tp"] == 0


def test_bad_threshold_and_method():
    gt = random_instances(0)
    with pytest.raises(InputError, match="threshold"):
        instance_scores(gt, gt, (0.0,))
    with pytest.raises(InputError, match="method"):
        instance_scores(gt, gt, (0.5,), method="hungarian")
