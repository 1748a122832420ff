"""A Keras 2D segmentation network run by SUN's multi-axis predictor (nine axes, soft voting)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.io import Volume, read_volume, write_volume
from unified_framework.sun.slice_model import load_slice_model
from unified_framework.tf import import_tensorflow


def _ball(size=24, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size]
    c = size / 2 - 0.5
    truth = ((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2) < (size / 3) ** 2
    image = (truth * 1.0 + rng.normal(0, 0.1, truth.shape)).astype(np.float32)
    return image, truth.astype(np.uint8)


def _network(path, tile=None):
    """A tiny per-pixel classifier (bright = class 1), trained in a few steps."""
    tf = import_tensorflow(1)
    keras = tf.keras
    keras.utils.set_random_seed(0)
    inputs = keras.Input((tile, tile, 1) if tile else (None, None, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(h)
    net = keras.Model(inputs, outputs)
    net.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    image, truth = _ball(16)
    net.fit(image[:, :, :, None], truth[:, :, :, None], epochs=15, batch_size=16, verbose=0)
    net.save(path)
    (path.parent / (path.name + ".json")).write_text(
        json.dumps({"class_names": ["background", "ball"], "voxel_size": [5, 5, 5]})
    )
    return path


@pytest.mark.parametrize("tile", [None, 16])
def test_keras_model_along_nine_axes(tmp_path, tile):
    from unified_framework.sun.inference import predict_volume

    model = load_slice_model(_network(tmp_path / "net.keras", tile))
    assert model.num_classes == 2 and model.class_names == ["background", "ball"]
    image, truth = _ball(24, seed=3)
    result = predict_volume(model, image, axes="9", device="cpu", return_probabilities=True)
    dice = (
        2 * np.sum((result.labels == 1) & (truth == 1)) / (np.sum(result.labels == 1) + truth.sum())
    )
    assert dice > 0.9
    assert result.probabilities.shape == (2, 24, 24, 24)
    assert float(result.entropy.max()) <= 1.0


def test_keras_model_through_sun_cli(tmp_path):
    net = _network(tmp_path / "net.keras")
    image, truth = _ball(20, seed=5)
    write_volume(tmp_path / "scan.tif", Volume(image, (5.0, 5.0, 5.0)))
    out = tmp_path / "seg.tif"
    assert (
        main(
            [
                "sun",
                "predict",
                str(tmp_path / "scan.tif"),
                "--model",
                str(net),
                "--out",
                str(out),
                "--axes",
                "3",
            ]
        )
        == 0
    )
    assert np.mean(read_volume(out).data == truth) > 0.95
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"bad\.keras: not a readable Keras model"):
        load_slice_model(tmp_path / "bad.keras")
