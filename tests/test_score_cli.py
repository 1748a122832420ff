"""``mdlma score`` end to end on phantom files written with the framework's own writer."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from unified_framework.cli.main import main
from unified_framework.io import write_volume
from unified_framework.metrics import score_instances, score_volumes

SPACING = (2.0, 0.5, 1.0)


def phantom(centre=(10, 12, 11), radii=(8, 4)):
    grid = np.indices((20, 24, 22), dtype=float)
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING)))
    labels = np.zeros(grid.shape[1:], dtype=np.uint8)
    labels[r <= radii[0]] = 1
    labels[r <= radii[1]] = 2
    return labels


@pytest.fixture
def files(tmp_path):
    gt = phantom()
    pred = phantom(centre=(11, 13, 11), radii=(7.5, 4.5))
    pred[0, 0, :3] = 3  # a label the ground truth does not have
    write_volume(tmp_path / "gt.tif", gt, spacing=SPACING)
    write_volume(tmp_path / "pred.tif", pred, spacing=SPACING)
    return tmp_path / "pred.tif", tmp_path / "gt.tif", pred, gt


def test_prints_table_and_writes_json_and_csv(files, tmp_path, capsys):
    pred_path, gt_path, pred, gt = files
    out_json, out_csv = tmp_path / "out" / "scores.json", tmp_path / "scores.csv"
    status = main(
        [
            "score",
            str(pred_path),
            str(gt_path),
            "--names",
            "bone",
            "implant",
            "debris",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    expected = score_volumes(pred, gt, spacing=SPACING, names=["bone", "implant", "debris"])
    # One aligned row per class: the dice column holds the same value in every row's format.
    rows = [
        line.split() for line in printed.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])
    ]
    assert [row[1] for row in rows] == ["bone", "implant", "debris"]
    assert [float(row[4]) for row in rows] == pytest.approx(expected["dice"].tolist(), abs=1e-3)
    document = json.loads(out_json.read_text())
    assert document["spacing"] == list(SPACING)  # taken from the files
    assert document["pred_only_labels"] == [3]
    by_label = {row["label"]: row for row in document["rows"]}
    assert by_label[1]["hd95"] == pytest.approx(expected["hd95"][0])
    assert by_label[1]["gt_volume"] == pytest.approx(np.count_nonzero(gt == 1) * 1.0)
    assert by_label[3]["recall"] is None and by_label[3]["hausdorff"] == "inf"  # strict JSON
    table = pd.read_csv(out_csv)
    np.testing.assert_allclose(table["assd"], expected["assd"])
    assert not list(tmp_path.glob("**/.*tmp*"))


def test_spacing_option_overrides_the_files(files, tmp_path):
    pred_path, gt_path, pred, gt = files
    out = tmp_path / "s.json"
    assert (
        main(
            [
                "score",
                str(pred_path),
                str(gt_path),
                "--labels",
                "1",
                "--spacing",
                "1",
                "1",
                "3",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["rows"][0]
    reference = score_volumes(pred, gt, labels=[1], spacing=(1, 1, 3))
    assert row["hausdorff"] == pytest.approx(reference["hausdorff"][0])
    assert row["pred_volume"] == pytest.approx(3.0 * np.count_nonzero(pred == 1))


def test_instances_mode(files, tmp_path, capsys):
    pred_path, gt_path, pred, gt = files
    out = tmp_path / "inst.csv"
    assert (
        main(
            [
                "score",
                str(pred_path),
                str(gt_path),
                "--instances",
                "--thresholds",
                "0.5",
                "0.75",
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out)
    expected = score_instances(pred, gt, [0.5, 0.75])
    assert table["threshold"].tolist() == [0.5, 0.75]
    np.testing.assert_array_equal(table["tp"], expected["tp"])
    assert "panoptic_quality" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["shape", "ndim", "missing", "nan", "names", "instances"])
def test_errors_exit_2_with_one_line(files, tmp_path, capsys, problem):
    pred_path, gt_path, pred, _ = files
    out = tmp_path / "never.json"
    args = ["score", str(pred_path), str(gt_path), "--json", str(out)]
    if problem == "shape":
        write_volume(tmp_path / "small.tif", pred[:-1], spacing=SPACING)
        args[1], expected = str(tmp_path / "small.tif"), "shape mismatch"
    elif problem == "ndim":
        write_volume(tmp_path / "slice.tif", pred[0], spacing=SPACING[1:])
        args[1], expected = str(tmp_path / "slice.tif"), "shape mismatch"
    elif problem == "missing":
        args[2], expected = str(tmp_path / "absent.tif"), "absent.tif"
    elif problem == "nan":
        with_nan = pred.astype(np.float32)
        with_nan[3, 3, 3] = np.nan
        write_volume(tmp_path / "nan.tif", with_nan, spacing=SPACING)
        args[1], expected = str(tmp_path / "nan.tif"), "NaN"
    elif problem == "names":
        args += ["--names", "only-one"]
        expected = "names: expected 3 names"
    else:
        args += ["--instances", "--labels", "1"]
        expected = "not used with --instances"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mdlma: error: ") and expected in err[-1]
    if problem == "shape":
        assert "small.tif" in err[-1] and "gt.tif" in err[-1]
    assert not out.exists()


def test_console_script(files):
    pred_path, gt_path, _, _ = files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "unified_framework",
            "score",
            str(pred_path),
            str(gt_path),
            "--no-surface",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "dice" in done.stdout and "hd95" not in done.stdout
    header = next(line for line in done.stdout.splitlines() if line.split()[:1] == ["label"])
    assert (
        len(header.split()) == 9
    )  # label, name, voxel counts, dice, iou, precision, recall, volume


def test_prediction_spacing_differing_from_ground_truth_is_reported(files, tmp_path, caplog):
    _, gt_path, pred, _ = files
    write_volume(tmp_path / "coarse.tif", pred, spacing=(4.0, 1.0, 1.0))
    out = tmp_path / "s.json"
    with caplog.at_level("WARNING"):
        assert (
            main(
                [
                    "score",
                    str(tmp_path / "coarse.tif"),
                    str(gt_path),
                    "--no-surface",
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
    assert "spacing differs" in caplog.text and "using the ground truth's" in caplog.text
    assert json.loads(out.read_text())["spacing"] == list(SPACING)
