"""A Keras 2D segmentation network (``.keras``) with SUN's slice-model interface.

The network takes ``(batch, rows, cols, channels)`` images and returns
``(batch, rows, cols, classes)`` class probabilities (a softmax output; logits are
turned into probabilities when the sidecar says ``"outputs": "logits"``). An optional
sidecar ``MODEL.keras.json`` describes what the file does not hold::

    {"class_names": ["background", "bone"], "voxel_size": [5, 5, 5],
     "normalization": {"mean": [0.5], "std": [0.2]}, "divisor": 16, "outputs": "softmax"}

Networks with a fixed input size are applied in tiles of that size (edges replicated);
fully convolutional ones get slices padded to ``divisor``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..sun.slice_model import BatchSlicePredictor, check_channels_and_dtype

if TYPE_CHECKING:
    from ..sun.inference.budget import MemoryBudget


class KerasSliceModel:
    """A ``.keras`` 2D segmentation network for SUN's multi-axis predictor.

    Examples
    --------
    >>> from unified_framework.sun.inference import predict_volume  # doctest: +SKIP
    >>> predict_volume(KerasSliceModel.load("net.keras"), volume, axes="9")  # doctest: +SKIP
    """

    def __init__(self, network: Any, path: Path, meta: dict[str, Any]) -> None:
        self.network = network
        self.path = path
        shape = tuple(network.inputs[0].shape)
        out = tuple(network.outputs[0].shape)
        if len(shape) != 4 or len(out) != 4:
            raise InputError(
                f"{path}: network maps {shape} to {out}; expected 2D images (batch, rows, cols, channels) "
                "to per-pixel classes (batch, rows, cols, classes)"
            )
        self.tile = (shape[1], shape[2]) if shape[1] and shape[2] else None
        self._in_channels = int(shape[3])
        classes = int(out[3])
        names = meta.get("class_names") or [f"class_{i}" for i in range(classes)]
        if len(names) != classes:
            raise InputError(f"{path}.json: {len(names)} class names for {classes} outputs")
        self.class_names = [str(n) for n in names]
        self.voxel_size = tuple(float(v) for v in meta.get("voxel_size", (1.0, 1.0, 1.0)))
        self.axes = tuple(meta.get("axes", ("z", "y", "x")))
        self.input_dtype = "float32"
        norm = meta.get("normalization") or {}
        self.mean = np.asarray(norm.get("mean", [0.0] * self._in_channels), np.float32)
        self.std = np.asarray(norm.get("std", [1.0] * self._in_channels), np.float32)
        self.divisor = int(meta.get("divisor", 16))
        self.logits = meta.get("outputs", "softmax") == "logits"

    @classmethod
    def load(cls, path: str | Path, **_: Any) -> KerasSliceModel:
        """Load a ``.keras`` file (and its ``.json`` sidecar if there is one).

        Raises
        ------
        InputError
            Missing, unreadable or not a 2D per-pixel classifier.
        """
        from . import import_tensorflow

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such Keras model file")
        sidecar = path.with_name(path.name + ".json")
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        tf = import_tensorflow()
        try:
            network = tf.keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for foreign files
            raise InputError(
                f"{path}: not a readable Keras model ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
            ) from None
        return cls(network, path, meta)

    @property
    def num_classes(self) -> int:
        """Classes."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self._in_channels

    @property
    def bytes_per_pixel(self) -> int:
        """Rough activation memory per pixel (a mid-sized U-Net)."""
        return 4 * 64 * 6

    def check_volume(self, shape: Sequence[int], dtype: Any, name: str) -> None:
        """Refuse a volume of another channel count or a non-numeric dtype."""
        check_channels_and_dtype(shape, dtype, name, self.in_channels)

    def slice_predictor(
        self, device: Any = None, memory_budget: int | MemoryBudget | None = None
    ) -> Any:
        """Batches for SUN's predictor (TensorFlow places the network itself)."""
        from ..sun.inference.budget import DEFAULT_MEMORY_BUDGET

        return BatchSlicePredictor(self, memory_budget or DEFAULT_MEMORY_BUDGET)

    def _run(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self.network(x, training=False), np.float32)
        if self.logits:
            y = np.exp(y - y.max(-1, keepdims=True))
            y /= y.sum(-1, keepdims=True)
        return y

    def predict_slices(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(k, classes, rows, cols)`` of raw slices ``(k, channels, rows, cols)``."""
        k, c, rows, cols = images.shape
        x = (images.transpose(0, 2, 3, 1) - self.mean) / self.std  # channels last
        if self.tile is None:
            pr, pc = -rows % self.divisor, -cols % self.divisor
            x = np.pad(x, ((0, 0), (0, pr), (0, pc), (0, 0)), mode="edge")
            y = self._run(x)[:, :rows, :cols]
        else:
            th, tw = self.tile
            pr, pc = -rows % th, -cols % tw
            x = np.pad(x, ((0, 0), (0, pr), (0, pc), (0, 0)), mode="edge")
            y = np.empty((k, rows + pr, cols + pc, self.num_classes), np.float32)
            for r in range(0, rows + pr, th):
                for q in range(0, cols + pc, tw):
                    y[:, r : r + th, q : q + tw] = self._run(x[:, r : r + th, q : q + tw])
            y = y[:, :rows, :cols]
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
