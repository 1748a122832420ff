"""A trained SUN model as one file: weights, architecture, normalisation and provenance.

The file is a ``torch.save`` archive of plain containers (loaded with
``weights_only=True``, so opening a model file cannot run code)::

    {"format": "mdlma-sun-model", "format_version": 1,
     "architecture": {...UNetConfig...}, "state_dict": {...},
     "normalization": {"low": [...], "high": [...], "mean": [...], "std": [...]},
     "class_names": [...], "voxel_size": [z, y, x], "axes": [...],
     "input_dtype": "float32", "provenance": {...}}
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path
from .axes import parse_axes
from .networks import UNetConfig

if TYPE_CHECKING:
    from .inference.budget import MemoryBudget


logger = logging.getLogger(__name__)

FORMAT = "mdlma-sun-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Normalization:
    """Per-channel intensity normalisation: clip to ``[low, high]``, then ``(v - mean) / std``."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_payload(cls, values: Any) -> Normalization:
        """From the mapping a model file stores (``low``, ``high``, ``mean``, ``std`` lists)."""
        return cls(
            **{k: tuple(float(v) for v in values[k]) for k in ("low", "high", "mean", "std")}
        )

    @classmethod
    def fit(
        cls,
        volumes: Sequence[np.ndarray],
        percentiles: tuple[float, float] = (0.5, 99.5),
        max_samples: int = 2_000_000,
        seed: int = 0,
    ) -> Normalization:
        """Fit on channel-first volumes ``(channels, z, y, x)`` (nnU-Net's CT scheme)."""
        rng = np.random.default_rng(seed)
        channels = volumes[0].shape[0]
        low, high, mean, std = [], [], [], []
        for c in range(channels):
            parts = []
            for volume in volumes:
                flat = volume[c].reshape(-1)
                take = min(flat.size, max_samples // len(volumes))
                parts.append(
                    flat[np.sort(rng.choice(flat.size, take, replace=False))]
                    if take < flat.size
                    else flat
                )
            values = np.concatenate(parts).astype(np.float64)
            lo, hi = np.percentile(values, percentiles)
            clipped = np.clip(values, lo, hi)
            low.append(float(lo))
            high.append(float(hi))
            mean.append(float(clipped.mean()))
            std.append(float(max(clipped.std(), 1e-8)))
        return cls(tuple(low), tuple(high), tuple(mean), tuple(std))

    def apply(self, images: np.ndarray, channel_axis: int = 1) -> np.ndarray:
        """Normalise float32 ``images`` in place along ``channel_axis`` and return them."""
        for c in range(len(self.mean)):
            index: list[slice | int] = [slice(None)] * images.ndim
            index[channel_axis] = c
            block = images[tuple(index)]
            np.clip(block, self.low[c], self.high[c], out=block)
            block -= np.float32(self.mean[c])
            block *= np.float32(1.0 / self.std[c])
        return images


@dataclass
class SunModel:
    """A trained SUN network and everything needed to apply it.

    Attributes
    ----------
    config : UNetConfig
    state_dict : dict of str to torch.Tensor
    normalization : Normalization
    class_names : list of str
    voxel_size : tuple of float
        Voxel size (micrometres, z y x) of the training data.
    axes : tuple of str
        Axes the model was trained on (the default for prediction).
    input_dtype : str
        numpy dtype of the training volumes.
    provenance : dict
        Training data, parameters, software versions, scores.
    """

    config: UNetConfig
    state_dict: dict
    normalization: Normalization
    class_names: list[str]
    voxel_size: tuple[float, ...]
    axes: tuple[str, ...]
    input_dtype: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Classes the network predicts (the :class:`~.slice_model.SliceModel` interface)."""
        return self.config.num_classes

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self.config.in_channels

    def slice_predictor(self, device: Any = None, memory_budget: int | MemoryBudget | None = None):
        """A :class:`~.inference.predictor.SlicePredictor` for this model (the :class:`~.slice_model.SliceModel` interface)."""
        from .inference.budget import DEFAULT_MEMORY_BUDGET
        from .inference.predictor import SlicePredictor

        return SlicePredictor(self, device, memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET)

    def network(self, device: Any = "cpu"):
        """The :class:`~unified_framework.sun.networks.UNet2D` with these weights, in eval mode."""
        from .networks import UNet2D

        net = UNet2D(self.config)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()

    def check_volume(self, shape: Sequence[int], dtype: Any, name: str) -> None:
        """Refuse a volume that does not fit the model.

        Parameters
        ----------
        shape : sequence of int
            ``(z, y, x)`` for one channel, ``(channels, z, y, x)`` otherwise.
        dtype : numpy dtype
        name : str
            How to call the volume in messages.

        Raises
        ------
        InputError
            Wrong number of channels or dimensions, or a dtype of another kind or size
            than the training data's (byte order does not matter; floating types may
            replace each other).
        """
        channels = 1 if len(shape) == 3 else (shape[0] if len(shape) == 4 else None)
        if channels is None:
            raise InputError(
                f"{name}: has shape {tuple(shape)}; expected a 3D volume (z, y, x) or (channels, z, y, x)"
            )
        if channels != self.config.in_channels:
            raise InputError(
                f"{name}: has {channels} channel(s); the model expects {self.config.in_channels}"
            )
        dtype = np.dtype(dtype)
        trained = np.dtype(self.input_dtype)
        if dtype.kind not in "uif":
            raise InputError(
                f"{name}: has dtype {dtype}; expected real numbers ({trained} like the training data)"
            )
        # Kind and size, not byte order: a big-endian uint16 volume holds the same intensities.
        same = (dtype.kind, dtype.itemsize) == (trained.kind, trained.itemsize)
        if not same and not (dtype.kind == "f" and trained.kind == "f"):
            raise InputError(
                f"{name}: has dtype {dtype} but the model was trained on {trained} data (intensities would not match); "
                f"convert the volume to {trained} with the same intensity scale"
            )
        if min(shape[-3:]) < 1:
            raise InputError(f"{name}: has an empty axis (shape {tuple(shape)})")


def save_model(path: str | Path, model: SunModel) -> Path:
    """Write ``model`` to ``path`` atomically and return the path."""
    import torch

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict.items()},
        "normalization": asdict(model.normalization),
        "class_names": list(model.class_names),
        "voxel_size": [float(v) for v in model.voxel_size],
        "axes": list(model.axes),
        "input_dtype": str(model.input_dtype),
        # Plain JSON types only, so that the file loads with weights_only=True.
        "provenance": json.loads(json.dumps(model.provenance, default=str)),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_model_payload(path: Path, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The checked dictionary of a torch-saved model file of format ``fmt``, ``version``.

    Shared by every model file of the framework (SUN packages, active-learning models), so
    a missing, damaged, foreign or newer file gets the same one-line error naming ``path``.
    """
    import torch

    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged archives
        raise InputError(
            f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise InputError(f"{path}: not a {what} (no format {fmt!r})")
    if payload.get("format_version") != version:
        raise InputError(
            f"{path}: model format version {payload.get('format_version')!r}; this framework reads version {version}"
        )
    return payload


def load_model(path: str | Path) -> SunModel:
    """Read and validate a model package.

    Raises
    ------
    InputError
        If the file is missing, not a SUN model package, truncated or inconsistent.
    """
    path = Path(path)
    payload = read_model_payload(path, FORMAT, FORMAT_VERSION, "SUN model package")
    try:
        config = UNetConfig(**payload["architecture"])
        normalization = Normalization.from_payload(payload["normalization"])
        class_names = [str(n) for n in payload["class_names"]]
        voxel_size = tuple(float(v) for v in payload["voxel_size"])
        axes = parse_axes(payload["axes"])
        input_dtype = str(np.dtype(payload["input_dtype"]))
        state_dict = dict(payload["state_dict"])
        provenance = dict(payload.get("provenance") or {})
    except InputError as exc:
        raise InputError(f"{path}: invalid model package: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: invalid model package: missing or malformed field {exc}"
        ) from None
    if len(class_names) != config.num_classes:
        raise InputError(f"{path}: {len(class_names)} class names for {config.num_classes} classes")
    if len(normalization.mean) != config.in_channels:
        raise InputError(
            f"{path}: normalisation for {len(normalization.mean)} channels, network has {config.in_channels}"
        )
    model = SunModel(
        config, state_dict, normalization, class_names, voxel_size, axes, input_dtype, provenance
    )
    try:
        model.network()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0][:160]})"
        ) from None
    return model


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (identifies the model in work directories)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
