"""score_volumes / score_instances: the combined table and input validation."""

import logging

import numpy as np
import pytest
from sklearn.metrics import f1_score

from unified_framework.errors import InputError
from unified_framework.metrics import score_instances, score_volumes, surface_metrics
from unified_framework.metrics.report import COLUMNS


def phantom(shape=(20, 24, 22), centre=(10, 12, 11), radii=(8, 6), spacing=(1.0, 1.0, 1.0)):
    """Concentric spheres: label 1 the shell, label 2 the core."""
    grid = np.indices(shape, dtype=float)
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[r <= radii[0]] = 1
    labels[r <= radii[1]] = 2
    return labels


def test_table_combines_overlap_and_surface_metrics():
    spacing = (2.0, 0.5, 1.0)
    gt = phantom(spacing=spacing)
    pred = phantom(centre=(11, 13, 11), radii=(7.5, 6.5), spacing=spacing)
    table = score_volumes(pred, gt, spacing=spacing, names=["shell", "core"])
    assert list(table.columns) == list(COLUMNS)
    assert table["name"].tolist() == ["shell", "core"] and table["label"].tolist() == [1, 2]
    np.testing.assert_allclose(
        table["dice"], f1_score(gt.ravel(), pred.ravel(), labels=[1, 2], average=None)
    )
    for row in table.itertuples():
        reference = surface_metrics(pred == row.label, gt == row.label, spacing)
        assert (row.hausdorff, row.hd95, row.assd) == pytest.approx(tuple(reference.values()))
        assert row.gt_volume == pytest.approx(
            np.count_nonzero(gt == row.label) * 1.0
        )  # 2.0 * 0.5 * 1.0
    assert table.attrs["pred_only_labels"] == []


def test_labels_only_in_prediction_are_reported(caplog):
    gt = phantom()
    pred = gt.copy()
    pred[0, 0, :4] = 7
    with caplog.at_level(logging.WARNING):
        table = score_volumes(pred, gt, surface=False, pred_name="pred.tif", gt_name="gt.tif")
    assert table["label"].tolist() == [1, 2, 7]
    row = table.set_index("label").loc[7]
    assert row["gt_voxels"] == 0 and row["pred_voxels"] == 4 and row["dice"] == 0.0
    assert table.attrs["pred_only_labels"] == [7]
    assert "pred.tif has labels absent from gt.tif: [7]" in caplog.text
    assert table[["hausdorff", "hd95", "assd"]].isna().all().all()


def test_explicit_labels_and_empty_score():
    gt = phantom()
    table = score_volumes(gt, gt, labels=[2, 5], empty_score=1.0, surface=False)
    assert table["label"].tolist() == [2, 5]
    assert table["dice"].tolist() == [1.0, 1.0]
    assert np.isnan(score_volumes(gt, gt, labels=[5], surface=False)["dice"][0])


def test_float_labels_with_whole_numbers_and_booleans_are_accepted():
    gt = phantom()
    as_float = score_volumes(gt.astype(np.float32), gt, surface=False)
    assert as_float["dice"].tolist() == [1.0, 1.0]
    boolean = score_volumes(gt > 0, gt > 0, surface=False)
    assert boolean["label"].tolist() == [1] and boolean["dice"][0] == 1.0


@pytest.mark.parametrize(
    "pred, message",
    [
        (np.full((4, 5, 6), 0.5), r"pred\.nii: expected integer labels, found non-integer values"),
        (
            np.where(np.eye(6)[:4, :5, None] > 0, np.nan, 1.0) * np.ones((4, 5, 6)),
            r"pred\.nii: label image contains NaN",
        ),
        (
            np.zeros((4, 5, 7), dtype=np.uint8),
            r"shape mismatch: pred\.nii has shape \(4, 5, 7\) but gt\.nii has shape \(4, 5, 6\)",
        ),
        (np.full((4, 5, 6), "a"), r"pred\.nii: expected an integer label image, got dtype <U1"),
    ],
)
def test_bad_inputs_raise_one_line_input_errors(pred, message):
    gt = np.zeros((4, 5, 6), dtype=np.uint8)
    with pytest.raises(InputError, match=message) as info:
        score_volumes(pred, gt, pred_name="pred.nii", gt_name="gt.nii")
    assert "\n" not in str(info.value)


def test_bad_names_labels_and_spacing():
    gt = phantom()
    with pytest.raises(InputError, match=r"names: expected 2 names"):
        score_volumes(gt, gt, names=["bone"])
    with pytest.raises(InputError, match="labels: expected integers"):
        score_volumes(gt, gt, labels=[1.5])
    with pytest.raises(InputError, match="spacing: expected 3 values"):
        score_volumes(gt, gt, spacing=(1.0, 2.0))


def test_score_instances_table():
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[1:4, 1:4], gt[6:9, 6:9] = 1, 2
    pred = np.zeros_like(gt)
    pred[1:4, 1:5] = 5  # IoU 9/12 = 0.75 with object 1
    table = score_instances(pred, gt, thresholds=[0.5, 0.8])
    assert table["tp"].tolist() == [1, 0] and table["fn"].tolist() == [1, 2]
    assert table["mean_matched_iou"][0] == pytest.approx(0.75)
    with pytest.raises(InputError, match="shape mismatch"):
        score_instances(pred[:5], gt)
