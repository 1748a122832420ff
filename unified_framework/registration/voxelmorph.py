"""Learned deformable registration with VoxelMorph (``voxelmorph.nn.models.VxmPairwise``, torch).

A U-Net looks at a (moving, fixed) pair and predicts a stationary velocity field,
integrated by scaling and squaring into a diffeomorphic displacement. It is trained
without ground truth: image similarity of the warped moving volume to the fixed one
(local NCC or MSE, from ``neurite``) plus a gradient (smoothness) penalty on the field.
Once trained, registering a pair is one forward pass (about a second).

Training follows SUN's pattern (:mod:`unified_framework.sun.training.trainer`):
resumable checkpoints written atomically, a JSON-lines metrics file for the job viewer
(one object per line)::

    {"step": 10, "phase": "train", "loss": -0.41, "similarity": -0.43, "smoothness": 0.02,
     "lr": 0.001, "throughput_vox_per_s": 120000.0, "time_s": 3.1}
    {"step": 100, "phase": "val", "loss": -0.52, "similarity": -0.55, "smoothness": 0.03, "time_s": 31.0}

and a model file holding the configuration, the weights and provenance.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..utils.atomic import atomic_path
from .convexadam import normalise

logger = logging.getLogger(__name__)

MODEL_FORMAT = "mdlma-voxelmorph-1"


@dataclass
class VoxelMorphConfig:
    """Parameters of :func:`train_voxelmorph` (stored in the model and its checkpoint).

    Attributes
    ----------
    features : list of int
        Feature maps per U-Net level (``VxmPairwise``'s ``nb_features``, whose U-Net
        pools once per level); sides must be multiples of ``2 ** len(features)``.
    integration_steps : int
        Scaling-and-squaring steps (0: the network's output is the displacement).
    loss : {"ncc", "mse"}
        Image similarity: local NCC (robust to grey-value scaling) or MSE.
    ncc_window : int
        Window side of the local NCC.
    smoothness : float
        Weight of the L2 gradient penalty on the displacement (voxel units).
    steps : int
        Optimisation steps.
    patch_size : int
        Side of the cubic training patches (clipped to the volumes).
    batch_size : int
        Pairs per step.
    learning_rate : float
        Adam learning rate.
    checkpoint_every, log_every, val_every : int
        Cadence of checkpoints, training metric lines and validation.
    seed : int
        Seed of patch sampling and initial weights.
    downsample : int
        Train and register on copies binned by this factor (the field is upsampled):
        2 makes a 128³ pair a 64³ one, about 8x faster to train and apply, for
        deformations smoother than a few voxels.
    device : str or None
        ``cpu``, ``cuda`` or None (a GPU if present).
    """

    features: list[int] = field(default_factory=lambda: [16, 16, 16, 16, 16])
    integration_steps: int = 5
    loss: str = "ncc"
    ncc_window: int = 9
    smoothness: float = 1.0
    steps: int = 1000
    patch_size: int = 64
    batch_size: int = 1
    learning_rate: float = 1e-3
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int = 100
    seed: int = 0
    device: str | None = None
    downsample: int = 1

    def __post_init__(self) -> None:
        self.features = [int(f) for f in self.features]
        if not self.features or min(self.features) < 1:
            raise InputError(
                f"voxelmorph: features {self.features}; expected positive feature counts, one per level"
            )
        if self.loss not in ("ncc", "mse"):
            raise InputError(f"voxelmorph: loss {self.loss!r}; expected 'ncc' or 'mse'")
        for name in (
            "steps",
            "patch_size",
            "batch_size",
            "checkpoint_every",
            "log_every",
            "val_every",
            "ncc_window",
            "downsample",
        ):
            if int(getattr(self, name)) < 1:
                raise InputError(
                    f"voxelmorph: {name}={getattr(self, name)!r}; expected a positive integer"
                )
        if self.integration_steps < 0 or not (
            self.smoothness >= 0 and math.isfinite(self.smoothness)
        ):
            raise InputError("voxelmorph: integration_steps and smoothness must be >= 0")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InputError(
                f"voxelmorph: learning_rate={self.learning_rate!r}; expected a positive number"
            )

    @property
    def multiple(self) -> int:
        """Sides the network accepts are multiples of this."""
        return 2 ** len(self.features)


@dataclass
class VoxelMorphModel:
    """A trained VoxelMorph network and what is needed to apply it."""

    config: VoxelMorphConfig
    state: dict[str, Any]
    provenance: dict[str, Any]

    def network(self, device: Any = "cpu") -> Any:
        """The ``VxmPairwise`` module with the trained weights, in eval mode."""
        net = _build_network(self.config)
        net.load_state_dict(self.state)
        return net.to(device).eval()


def _build_network(config: VoxelMorphConfig) -> Any:
    import voxelmorph as vxm

    return vxm.nn.models.VxmPairwise(
        ndim=3,
        source_channels=1,
        target_channels=1,
        nb_features=list(config.features),
        integration_steps=config.integration_steps,
    )


def _losses(config: VoxelMorphConfig) -> tuple[Any, Any]:
    import neurite as ne

    if config.loss == "ncc":
        ncc = ne.nn.modules.NCC(window_size=config.ncc_window)

        def similarity(warped: Any, target: Any) -> Any:
            return -ncc(warped, target).mean()  # neurite's NCC is a score in [0, 1]

    else:
        mse = ne.nn.modules.MSE()

        def similarity(warped: Any, target: Any) -> Any:
            return mse(warped, target)

    return similarity, ne.nn.modules.SpatialGradient(penalty="l2")


def check_pair(fixed: Any, moving: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both volumes as normalised float32 arrays of one 3D shape, or :class:`InputError`.

    Examples
    --------
    >>> f, m = check_pair(np.zeros((4, 4, 4)), np.ones((4, 4, 4)), "pair")
    >>> f.dtype, m.shape
    (dtype('float32'), (4, 4, 4))
    """
    fixed, moving = np.asarray(fixed), np.asarray(moving)
    if fixed.ndim != 3 or moving.ndim != 3:
        raise InputError(
            f"{name}: fixed has {fixed.ndim} and moving {moving.ndim} dimensions; expected two 3D volumes"
        )
    if fixed.shape != moving.shape:
        raise InputError(
            f"{name}: fixed {fixed.shape} and moving {moving.shape}; expected one grid (resample first)"
        )
    for which, array in (("fixed", fixed), ("moving", moving)):
        if array.dtype.kind not in "uif":
            raise InputError(f"{name}: {which} has dtype {array.dtype}; expected real numbers")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(
                f"{name}: {which} contains NaN or infinite values; expected finite numbers"
            )
    return normalise(fixed), normalise(moving)


def _binned(
    pair: tuple[np.ndarray, np.ndarray], config: VoxelMorphConfig
) -> tuple[np.ndarray, np.ndarray]:
    if config.downsample == 1:
        return pair
    from .run import bin_volume

    return bin_volume(pair[0], config.downsample), bin_volume(pair[1], config.downsample)


def _pad_to_multiple(array: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    pads = [(0, (-n) % multiple) for n in array.shape]
    return np.pad(array, pads, mode="edge"), tuple(slice(0, n) for n in array.shape)


def _sample_batch(
    pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, size: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    fixed_b, moving_b = [], []
    for _ in range(batch):
        fixed, moving = pairs[int(rng.integers(len(pairs)))]
        starts = [int(rng.integers(0, n - size + 1)) for n in fixed.shape]
        box = tuple(slice(s, s + size) for s in starts)
        f, m = fixed[box], moving[box]
        if rng.random() < 0.5:  # either direction is a valid training pair
            f, m = m, f
        fixed_b.append(f)
        moving_b.append(m)
    return np.stack(fixed_b)[:, None], np.stack(moving_b)[:, None]


@dataclass
class VoxelMorphTraining:
    """What :func:`train_voxelmorph` produced."""

    model: VoxelMorphModel
    model_path: Path
    steps: int
    metrics_path: Path
    history: list[dict[str, Any]]


def train_voxelmorph(
    pairs: Sequence[tuple[Any, Any]],
    model_path: str | Path,
    config: VoxelMorphConfig | None = None,
    *,
    val_pairs: Sequence[tuple[Any, Any]] = (),
    sources: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    max_steps_this_run: int | None = None,
) -> VoxelMorphTraining:
    """Train VoxelMorph on (fixed, moving) pairs and save the model.

    Parameters
    ----------
    pairs : sequence of (fixed, moving)
        Training pairs, each on one grid (shapes may differ between pairs).
    model_path : path-like
        Model file to write (``.pt``).
    config : VoxelMorphConfig, optional
    val_pairs : sequence of (fixed, moving), optional
        Held-out pairs, scored every ``config.val_every`` steps (whole volumes).
    sources : sequence of str, optional
        Names of the training pairs (provenance).
    metrics_path : path-like, optional
        JSON lines; default ``<model_path>.metrics.jsonl``.
    checkpoint_path : path-like, optional
        Default ``<model_path>.checkpoint.pt``.
    resume : bool
        Continue from the checkpoint if there is one (else start afresh).
    progress : bool
        Show a progress bar.
    max_steps_this_run : int, optional
        Stop after this many steps of this call (checkpointing first), as if killed.

    Returns
    -------
    VoxelMorphTraining

    Examples
    --------
    >>> from unified_framework.data import make_registration_pair
    >>> pair = make_registration_pair((32, 32, 32))
    >>> result = train_voxelmorph([(pair.fixed, pair.moving)], tmp_path / "vxm.pt",
    ...                           VoxelMorphConfig(steps=2, patch_size=32))  # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm

    # SUN's metrics-file helpers: the same JSON-lines format and truncation on resume.
    from ..sun.inference.predictor import resolve_device
    from ..utils.metrics_log import append_metrics, truncate_metrics

    config = config or VoxelMorphConfig()
    model_path = Path(model_path)
    metrics_path = (
        Path(metrics_path)
        if metrics_path
        else model_path.with_name(model_path.name + ".metrics.jsonl")
    )
    checkpoint_path = (
        Path(checkpoint_path)
        if checkpoint_path
        else model_path.with_name(model_path.name + ".checkpoint.pt")
    )
    if not pairs:
        raise InputError(
            "voxelmorph training: no training pairs; expected at least one (fixed, moving) pair"
        )
    names = list(sources) if sources else [f"pair {i}" for i in range(len(pairs))]
    data = [_binned(check_pair(f, m, n), config) for (f, m), n in zip(pairs, names)]
    val_data = [
        _binned(check_pair(f, m, f"validation pair {i}"), config)
        for i, (f, m) in enumerate(val_pairs)
    ]
    smallest = min(min(f.shape) for f, _ in data)
    size = min(config.patch_size, smallest) // config.multiple * config.multiple
    if size < config.multiple:
        raise InputError(
            f"voxelmorph training: volumes of side {smallest}; expected at least {config.multiple} for {len(config.features)} U-Net levels"
        )

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    network = _build_network(config).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    similarity, gradient = _losses(config)
    rng = np.random.default_rng([config.seed, 2])
    identity = {"config": asdict(config), "patch": size}
    state: dict[str, Any] = {"step": 0}
    if resume and checkpoint_path.is_file():
        state = _load_checkpoint(checkpoint_path, identity, network, optimizer, rng, device)
        truncate_metrics(metrics_path, state["step"])
        logger.info(
            "resumed VoxelMorph training from %s at step %d", checkpoint_path, state["step"]
        )
    elif metrics_path.exists():
        metrics_path.unlink()

    def save_checkpoint() -> None:
        payload = {
            "identity": json.dumps(identity),
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "numpy_rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "state": state,
        }
        with atomic_path(checkpoint_path) as tmp:
            torch.save(payload, tmp)

    def losses(fixed_t: Any, moving_t: Any) -> tuple[Any, Any, Any]:
        displacement, warped = network(moving_t, fixed_t, return_warped_source=True)
        sim = similarity(warped, fixed_t)
        smooth = gradient(displacement)
        return sim + config.smoothness * smooth, sim, smooth

    def validate() -> dict[str, float]:
        network.eval()
        totals = np.zeros(3)
        with torch.no_grad():
            for fixed, moving in val_data:
                fixed_p, _ = _pad_to_multiple(fixed, config.multiple)
                moving_p, _ = _pad_to_multiple(moving, config.multiple)
                values = losses(
                    torch.from_numpy(fixed_p)[None, None].to(device),
                    torch.from_numpy(moving_p)[None, None].to(device),
                )
                totals += [float(v) for v in values]
        network.train()
        totals /= len(val_data)
        return {"loss": totals[0], "similarity": totals[1], "smoothness": totals[2]}

    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    window_start, window_voxels, steps_this_run = time.perf_counter(), 0, 0
    network.train()
    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        desc="VoxelMorph train",
        unit="step",
        disable=None if progress else True,
    )
    while state["step"] < config.steps:
        if max_steps_this_run is not None and steps_this_run >= max_steps_this_run:
            save_checkpoint()
            break
        step = state["step"] + 1
        fixed_b, moving_b = _sample_batch(data, rng, size, config.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss, sim, smooth = losses(
            torch.from_numpy(fixed_b).to(device), torch.from_numpy(moving_b).to(device)
        )
        if not torch.isfinite(loss.detach()):
            raise InputError(
                f"voxelmorph training diverged at step {step} (loss {loss.item()}); lower the learning rate"
            )
        loss.backward()
        optimizer.step()
        state["step"] = step
        steps_this_run += 1
        window_voxels += fixed_b.size
        bar.update()
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - window_start
            line = {
                "step": step,
                "phase": "train",
                "loss": loss.item(),
                "similarity": sim.item(),
                "smoothness": smooth.item(),
                "lr": config.learning_rate,
                "throughput_vox_per_s": window_voxels / max(elapsed, 1e-9),
                "time_s": time.perf_counter() - started,
            }
            append_metrics(metrics_path, line)
            history.append(line)
            bar.set_postfix(loss=f"{line['loss']:.3f}")
            window_start, window_voxels = time.perf_counter(), 0
        if val_data and (step % config.val_every == 0 or step == config.steps):
            line = {
                "step": step,
                "phase": "val",
                **validate(),
                "time_s": time.perf_counter() - started,
            }
            append_metrics(metrics_path, line)
            history.append(line)
        if step % config.checkpoint_every == 0:
            save_checkpoint()
    bar.close()
    provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "framework_version": __version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
        "training_data": [{"name": n, "shape": list(f.shape)} for n, (f, _) in zip(names, data)],
        "patch_size": size,
        "steps": state["step"],
        "finished": state["step"] >= config.steps,
    }
    model = VoxelMorphModel(
        config, {k: v.detach().cpu() for k, v in network.state_dict().items()}, provenance
    )
    save_voxelmorph(model_path, model)
    return VoxelMorphTraining(model, model_path, state["step"], metrics_path, history)


def _load_checkpoint(
    path: Path, identity: dict, network: Any, optimizer: Any, rng: np.random.Generator, device: Any
) -> dict[str, Any]:
    import torch

    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        stored = json.loads(payload["identity"])
    except Exception as exc:  # damaged or foreign file
        raise InputError(
            f"{path}: not a readable VoxelMorph training checkpoint ({type(exc).__name__}); remove it or train without resume"
        ) from None
    if stored != json.loads(json.dumps(identity)):
        raise InputError(
            f"{path}: checkpoint of a different training configuration; remove it or train without resume (--no-resume)"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    return dict(payload["state"])


def save_voxelmorph(path: str | Path, model: VoxelMorphModel) -> Path:
    """Write a model file (configuration, weights, provenance) atomically.

    Examples
    --------
    >>> save_voxelmorph("vxm.pt", model)  # doctest: +SKIP
    """
    import torch

    payload = {
        "format": MODEL_FORMAT,
        "config": json.dumps(asdict(model.config)),
        "provenance": json.dumps(model.provenance),
        "state": model.state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_voxelmorph(path: str | Path) -> VoxelMorphModel:
    """Read a model file written by :func:`save_voxelmorph` (weights only, no pickled code).

    Examples
    --------
    >>> model = load_voxelmorph("vxm.pt")  # doctest: +SKIP
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such VoxelMorph model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != MODEL_FORMAT:
            raise ValueError(payload.get("format"))
        config = VoxelMorphConfig(**json.loads(payload["config"]))
        return VoxelMorphModel(config, payload["state"], json.loads(payload["provenance"]))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: not a VoxelMorph model of mdlma ({type(exc).__name__}); expected a file written by 'mdlma register voxelmorph-train'"
        ) from None


def register_voxelmorph(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float],
    model: VoxelMorphModel | str | Path,
    device: str | None = None,
) -> np.ndarray:
    """Register a pair with a trained model: one forward pass.

    Parameters
    ----------
    fixed, moving : numpy.ndarray ``(z, y, x)``
        On one grid; padded to the network's multiple internally.
    spacing : sequence of 3 float
        Voxel size, micrometres.
    model : VoxelMorphModel or path-like
    device : str, optional
        Default: a GPU if torch sees one.

    Returns
    -------
    numpy.ndarray ``(3, z, y, x)`` float32
        The displacement field in micrometres (:mod:`.fields` convention).

    Examples
    --------
    >>> field = register_voxelmorph(fixed, moving, (5, 5, 5), "vxm.pt")  # doctest: +SKIP
    """
    import torch

    from ..sun.inference.predictor import resolve_device

    if not isinstance(model, VoxelMorphModel):
        model = load_voxelmorph(model)
    fixed_n, moving_n = _binned(check_pair(fixed, moving, "voxelmorph"), model.config)
    torch_device = resolve_device(device)
    network = model.network(torch_device)
    fixed_p, crop = _pad_to_multiple(fixed_n, model.config.multiple)
    moving_p, _ = _pad_to_multiple(moving_n, model.config.multiple)
    with torch.inference_mode():
        displacement = network(
            torch.from_numpy(moving_p)[None, None].to(torch_device),
            torch.from_numpy(fixed_p)[None, None].to(torch_device),
        )
    field = (
        displacement[0].cpu().numpy()[(slice(None), *crop)].astype(np.float32)
    )  # voxels, channel = array axis
    coarse = tuple(float(s) * model.config.downsample for s in spacing)
    field *= np.asarray(coarse, dtype=np.float32).reshape(3, 1, 1, 1)
    if model.config.downsample > 1:
        from .fields import resample_field

        field = resample_field(field, np.shape(fixed), spacing, coarse)
    return np.ascontiguousarray(field)
