"""StarDist nuclei instance segmentation (tiny training in the test) and the nuclei phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.data.nuclei import make_nuclei
from unified_framework.errors import InputError
from unified_framework.io import read_volume
from unified_framework.metrics.report import score_instances


def test_nuclei_phantom_touching_instances():
    image, labels = make_nuclei((96, 96), seed=2)
    assert labels.dtype == np.uint16 and image.dtype == np.float32
    n = int(labels.max())
    assert n > 15 and set(np.unique(labels)) == set(range(n + 1))  # consecutive
    # touching: some foreground pixel has a 4-neighbour of another nucleus
    right = (labels[:, 1:] > 0) & (labels[:, :-1] > 0) & (labels[:, 1:] != labels[:, :-1])
    assert right.any()
    assert image[labels > 0].mean() > 3 * image[labels == 0].mean()
    image3, labels3 = make_nuclei((24, 48, 48), seed=1, radius=5)
    assert image3.shape == (24, 48, 48) and labels3.max() > 5
    with pytest.raises(InputError, match="expected 2 or 3 sides"):
        make_nuclei((8, 8))


def test_sample_nuclei_cli(tmp_path):
    out, gt = tmp_path / "n.tif", tmp_path / "n_labels.tif"
    assert main(["sample", "nuclei", str(out), "--gt", str(gt), "--shape", "64", "64"]) == 0
    assert read_volume(gt).data.max() > 5 and read_volume(out).shape == (64, 64)


@pytest.mark.slow
def test_stardist_2d_train_predict_score(tmp_path):
    from unified_framework.tf.stardist import load_stardist, predict_stardist, train_stardist

    pairs = [make_nuclei((96, 96), seed=s, radius=6) for s in range(3)]
    model = train_stardist(
        [p[0] for p in pairs], [p[1] for p in pairs], tmp_path / "sd", epochs=4, steps=20, rays=16
    )
    record = json.loads((model / "mdlma_stardist.json").read_text())
    assert record["ndim"] == 2 and record["epochs"] == 4
    image, truth = make_nuclei((96, 96), seed=9, radius=6)
    labels = predict_stardist(model, image)
    scores = score_instances(labels, truth, thresholds=(0.5,))
    assert float(scores["f1"].iloc[0]) > 0.1  # 80 steps; longer training gives far more
    # what StarDist is for: touching nuclei come apart. About as many instances as true
    # nuclei (37 of 36 at this budget), where connected components of an Otsu threshold
    # merge them into a few (8)
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    n_true = int(truth.max())
    assert 0.75 * n_true <= len(np.unique(labels[labels > 0])) <= 1.3 * n_true
    assert ndimage.label(image > threshold_otsu(image))[0].max() < 0.5 * n_true
    with pytest.raises(InputError, match="not a StarDist model folder"):
        load_stardist(tmp_path)
    with pytest.raises(InputError, match="exists already"):
        train_stardist([image], [truth], model)


@pytest.mark.slow
def test_stardist_3d_cli(tmp_path):
    for s in range(2):
        main(
            [
                "sample",
                "nuclei",
                str(tmp_path / f"n{s}.tif"),
                "--gt",
                str(tmp_path / f"l{s}.tif"),
                "--shape",
                "16",
                "32",
                "32",
                "--radius",
                "4",
                "--seed",
                str(s),
            ]
        )
    args = ["stardist", "train", "--out", str(tmp_path / "m3")]
    for s in range(2):
        args += ["--pair", str(tmp_path / f"n{s}.tif"), str(tmp_path / f"l{s}.tif")]
    assert (
        main(
            [
                *args,
                "--epochs",
                "1",
                "--steps",
                "2",
                "--rays",
                "32",
                "--patch",
                "16",
                "--no-optimize-thresholds",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "stardist",
                "predict",
                str(tmp_path / "n0.tif"),
                "--model",
                str(tmp_path / "m3"),
                "--out",
                str(tmp_path / "p.tif"),
                "--gt",
                str(tmp_path / "l0.tif"),
            ]
        )
        == 0
    )
    assert read_volume(tmp_path / "p.tif").shape == (16, 32, 32)
