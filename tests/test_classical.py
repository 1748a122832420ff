"""Classical baselines (multi-Otsu, marker watershed) and ``mdlma segment classical``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from unified_framework.classical import (
    evaluate_command,
    majority_order,
    multi_otsu,
    relabel,
    run_classical,
    segment,
    watershed_classes,
)
from unified_framework.cli.main import main
from unified_framework.data.phantom import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import read_volume, write_volume


def blocks(noise: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nested boxes of classes 0..3 with grey values 0..3 plus Gaussian noise."""
    truth = np.zeros((12, 48, 48), np.uint8)
    truth[:, 6:42, 6:42] = 1
    truth[:, 14:34, 14:34] = 2
    truth[:, 20:28, 20:28] = 3
    rng = np.random.default_rng(seed)
    return truth.astype(np.float32) + rng.normal(0, noise, truth.shape).astype(np.float32), truth


@pytest.mark.parametrize("method", [multi_otsu, watershed_classes])
def test_methods_recover_intensity_classes(method):
    image, truth = blocks()
    labels = method(image, classes=4, smoothing=1.0)
    assert labels.dtype == np.uint8 and labels.shape == truth.shape
    accuracy = [(labels[truth == k] == k).mean() for k in range(4)]
    assert min(accuracy) > 0.9, accuracy


def test_watershed_beats_thresholding_on_noisy_data():
    image, truth = blocks(noise=0.45)
    plain = multi_otsu(image, classes=4, smoothing=0.0)
    shed = watershed_classes(image, classes=4, smoothing=1.0)
    assert (shed == truth).mean() > (plain == truth).mean()


def test_labels_are_ordered_dark_to_bright():
    image = np.concatenate([np.full((2, 4, 4), v, np.float32) for v in (5.0, -1.0, 2.0)])
    labels = multi_otsu(image, classes=3)
    assert labels[0, 0, 0] == 2 and labels[2, 0, 0] == 0 and labels[4, 0, 0] == 1


def test_relabel_and_majority_order():
    image, truth = blocks()
    ranked = multi_otsu(image, classes=4, smoothing=1.0)
    shuffled_truth = np.array([0, 3, 1, 2], np.uint8)[truth]  # class numbers not in intensity order
    order = majority_order(ranked, shuffled_truth, 4)
    assert order == [0, 3, 1, 2]
    assert (relabel(ranked, order) == shuffled_truth).mean() > 0.95
    # several intensity classes may map to one class
    merged = relabel(ranked, [0, 0, 1, 1])
    assert set(np.unique(merged)) == {0, 1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: multi_otsu(np.zeros((4, 4, 4)), classes=3), "constant"),
        (lambda: multi_otsu(np.full((4, 4), np.nan), classes=3), "NaN"),
        (lambda: multi_otsu(np.zeros((2, 2, 2, 2)), classes=3), "2D or 3D"),
        (lambda: multi_otsu(np.arange(27.0).reshape(3, 3, 3), classes=1), "classes"),
        (
            lambda: multi_otsu(np.arange(27.0).reshape(3, 3, 3), classes=3, smoothing=-1),
            "smoothing",
        ),
        (
            lambda: watershed_classes(
                np.arange(27.0).reshape(3, 3, 3), classes=3, marker_fraction=0
            ),
            "marker_fraction",
        ),
        (lambda: segment(np.arange(27.0).reshape(3, 3, 3), "kmeans"), "method"),
        (
            lambda: segment(
                np.arange(27.0).reshape(3, 3, 3), "multi-otsu", classes=3, order=[0, 1]
            ),
            "label order",
        ),
        (lambda: relabel(np.array([0, 1, 2]), [0, 1]), "label order"),
        (
            lambda: majority_order(np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8), 2),
            "shape",
        ),
    ],
)
def test_bad_input_is_an_input_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_run_classical_on_files_scores_and_reports(tmp_path):
    image, truth = make_implant_phantom((24, 48, 48), seed=3)
    write_volume(tmp_path / "scan.tif", image, spacing=(5.0, 5.0, 5.0))
    write_volume(tmp_path / "scan_gt.tif", truth, spacing=(5.0, 5.0, 5.0))
    result = run_classical(
        tmp_path / "scan.tif",
        tmp_path / "seg.tif",
        "watershed",
        classes=5,
        label_order="truth",
        ground_truth=tmp_path / "scan_gt.tif",
        report=tmp_path / "report.json",
        class_names=["background", "bone", "implant", "layer"],
    )
    written = read_volume(tmp_path / "seg.tif")
    assert written.shape == truth.shape and tuple(written.spacing) == (5.0, 5.0, 5.0)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["label_order_from_truth"] is True and len(report["label_order"]) == 5
    implant = next(row for row in report["scores"] if row["label"] == 2)
    assert implant["name"] == "implant" and implant["dice"] > 0.8  # the bright implant is easy
    assert report["resources"]["wall_time_s"] > 0 and report == json.loads(
        json.dumps(result, default=str)
    )


def test_cli_segment_classical(tmp_path, capsys):
    image, truth = blocks()
    write_volume(tmp_path / "img.tif", image)
    write_volume(tmp_path / "img_gt.tif", truth)
    status = main(
        [
            "segment",
            "classical",
            str(tmp_path / "img.tif"),
            "-o",
            str(tmp_path / "out.tif"),
            "--classes",
            "4",
            "--smoothing",
            "1",
            "--ground-truth",
            str(tmp_path / "img_gt.tif"),
            "--label-order",
            "0,1,2,3",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "label 3: dice" in out
    scores = json.loads((tmp_path / "r.json").read_text())["scores"]
    assert min(row["dice"] for row in scores) > 0.9


def test_cli_bad_label_order_leaves_no_output(tmp_path, capsys):
    image, _ = blocks()
    write_volume(tmp_path / "img.tif", image)
    status = main(
        [
            "segment",
            "classical",
            str(tmp_path / "img.tif"),
            "-o",
            str(tmp_path / "out.tif"),
            "--label-order",
            "0,x",
        ]
    )
    assert status == 2
    assert "--label-order" in capsys.readouterr().err
    assert not (tmp_path / "out.tif").exists()


def test_evaluate_command_measures_and_scores_any_program(tmp_path, capsys):
    image, truth = blocks()
    write_volume(tmp_path / "img.tif", image)
    write_volume(tmp_path / "img_gt.tif", truth)
    program = [
        sys.executable,
        "-m",
        "unified_framework",
        "segment",
        "classical",
        str(tmp_path / "img.tif"),
        "-o",
        str(tmp_path / "seg.tif"),
        "--classes",
        "4",
        "--smoothing",
        "1",
    ]
    status = main(
        [
            "segment",
            "evaluate",
            "--out",
            str(tmp_path / "seg.tif"),
            "--ground-truth",
            str(tmp_path / "img_gt.tif"),
            "--report",
            str(tmp_path / "r.json"),
            "--method",
            "otsu-cli",
            "--",
            *program,
        ]
    )
    assert status == 0 and "otsu-cli:" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "otsu-cli" and report["command"] == program
    assert min(row["dice"] for row in report["scores"]) > 0.9
    # the child's CPU time is counted (it was waited for)
    assert report["resources"]["cpu_time_s"] > 0.1 and report["resources"]["wall_time_s"] > 0


def test_evaluate_command_reports_failures(tmp_path):
    with pytest.raises(InputError, match="exit status 3 \\(boom\\)"):
        evaluate_command(
            [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
            tmp_path / "never.tif",
        )
    with pytest.raises(InputError, match="wrote no output"):
        evaluate_command([sys.executable, "-c", "pass"], tmp_path / "never.tif")
    assert not (tmp_path / "never.tif").exists()
