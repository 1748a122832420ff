"""The model interface SUN's multi-axis predictor runs: class probabilities of 2D slices.

SUN's nine-axis sampling, batching, streaming soft-voting accumulator, uncertainty
outputs and resumable work directory do not depend on the network. Any model with this
interface runs through them:

* a SUN model package (:class:`~.model_package.SunModel`),
* a trained nnU-Net ``2d`` result folder (:class:`unified_framework.nnunet.model.NnUNetSliceModel`),
* a Keras 2D segmentation network, ``.keras`` (:class:`unified_framework.tf.keras_model.KerasSliceModel`).

:func:`load_slice_model` picks the kind from the path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .inference.budget import MemoryBudget


@runtime_checkable
class SliceModel(Protocol):
    """What SUN's predictor needs of a model.

    Attributes
    ----------
    class_names : list of str
    voxel_size : tuple of float
        Training voxel size (micrometres, z y x); a volume of another size gets a warning.
    axes : tuple of str
        Default axes for prediction.
    input_dtype : str
    """

    class_names: list[str]
    voxel_size: tuple[float, ...]
    axes: tuple[str, ...]
    input_dtype: str

    @property
    def num_classes(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    def check_volume(self, shape: Sequence[int], dtype: Any, name: str) -> None:
        """Raise :class:`InputError` for a volume the model cannot take."""

    def slice_predictor(
        self, device: Any = None, memory_budget: int | MemoryBudget | None = None
    ) -> Any:
        """An object with ``num_classes``, ``batch_size(rows, cols)`` and
        ``__call__(images, stats=None, out=None)`` (see :class:`BatchSlicePredictor`)."""


class BatchSlicePredictor:
    """Batches slices through a model's ``predict_slices`` (for models other than SUN's).

    Parameters
    ----------
    model : object
        Has ``num_classes``, ``bytes_per_pixel`` (activation memory per input pixel) and
        ``predict_slices(images) -> probabilities``: float32 ``(k, channels, rows, cols)``
        raw intensities to ``(k, classes, rows, cols)`` probabilities summing to 1.
    memory_budget : int or MemoryBudget
        Its ``activations`` part (half of a byte count) bounds a batch's activations.
    """

    def __init__(self, model: Any, memory_budget: int | MemoryBudget) -> None:
        self.model = model
        self.num_classes = int(model.num_classes)
        from .inference.budget import MemoryBudget

        activations = MemoryBudget.of(memory_budget).activations
        self.batch_pixels = max(activations // max(int(model.bytes_per_pixel), 1), 1)

    def batch_size(self, rows: int, cols: int) -> int:
        """Slices of this size per batch (at least 1)."""
        return max(1, self.batch_pixels // max(rows * cols, 1))

    def __call__(
        self, images: np.ndarray, stats: Any = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Probabilities ``(k, classes, rows, cols)`` float32 of raw images ``(k, channels, rows, cols)``."""
        started = time.perf_counter()
        k, _, rows, cols = images.shape
        if out is None:
            out = np.empty((k, self.num_classes, rows, cols), np.float32)
        batch = self.batch_size(rows, cols)
        for i in range(0, k, batch):
            out[i : i + batch] = self.model.predict_slices(
                np.ascontiguousarray(images[i : i + batch], dtype=np.float32)
            )
        if stats is not None:
            stats.network_seconds += time.perf_counter() - started
            stats.slice_pixels += k * rows * cols
            stats.network_pixels += k * rows * cols
        return out


def check_channels_and_dtype(
    shape: Sequence[int], dtype: Any, name: str, in_channels: int, trained: str | None = None
) -> None:
    """The checks every slice model makes: 3D, the channel count, real numbers.

    Examples
    --------
    >>> check_channels_and_dtype((4, 5, 6), "float32", "v", 1)
    >>> check_channels_and_dtype((2, 4, 5, 6), "float32", "v", 1)
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: v: has 2 channel(s); the model expects 1
    """
    channels = 1 if len(shape) == 3 else (shape[0] if len(shape) == 4 else None)
    if channels is None:
        raise InputError(
            f"{name}: has shape {tuple(shape)}; expected a 3D volume (z, y, x) or (channels, z, y, x)"
        )
    if channels != in_channels:
        raise InputError(f"{name}: has {channels} channel(s); the model expects {in_channels}")
    if np.dtype(dtype).kind not in "uif":
        raise InputError(f"{name}: has dtype {np.dtype(dtype)}; expected real numbers")
    if min(shape[-3:]) < 1:
        raise InputError(f"{name}: has an empty axis (shape {tuple(shape)})")


def is_nnunet_folder(path: Path) -> bool:
    """A trained nnU-Net result folder (or one made by ``mdlma nnunet import``)."""
    return path.is_dir() and (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def load_slice_model(path: str | Path, **kwargs: Any) -> SliceModel:
    """Load any model SUN's predictor can run, by what ``path`` is.

    * a folder with ``plans.json`` and ``dataset.json``: a trained nnU-Net ``2d`` model;
    * ``*.keras``: a Keras 2D segmentation network;
    * anything else: a SUN model package.

    Raises
    ------
    InputError
        Not a model of any of these kinds (one line naming the path).

    Examples
    --------
    >>> load_slice_model("sun.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        if not is_nnunet_folder(path):
            raise InputError(
                f"{path}: a folder but not an nnU-Net result (no plans.json and dataset.json); "
                "expected a SUN model file, a .keras file or an nnU-Net model folder"
            )
        from ..nnunet.model import NnUNetSliceModel

        return NnUNetSliceModel.load(path, **kwargs)
    if path.suffix == ".keras":
        from ..tf.keras_model import KerasSliceModel

        return KerasSliceModel.load(path, **kwargs)
    from .model_package import load_model

    return load_model(path)


def model_digest(path: str | Path) -> str:
    """SHA-256 identifying a model file or folder (every file's name and content)."""
    from .model_package import file_digest

    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(file_digest(item).encode())
    return digest.hexdigest()
