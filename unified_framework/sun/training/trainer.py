"""Training of a SUN model: slices from all chosen axes, checkpoints, resume, early stopping.

Metrics go to a JSON-lines file, one object per line::

    {"step": 120, "phase": "train", "loss": 0.41, "dice": {"bone": 0.83, ...},
     "lr": 0.0019, "throughput_px_per_s": 51234.0, "time_s": 12.3}
    {"step": 200, "phase": "val", "loss": 0.37, "dice": {...}, "mean_dice": 0.81, "best": true}

``dice`` of training lines is measured on the batch; ``mean_dice`` of validation lines
averages the non-background classes (the early-stopping score).
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

from ... import __version__
from ...errors import InputError
from ...utils.atomic import atomic_path
from ...utils.heap import reuse_freed_memory
from ...utils.metrics_log import append_metrics, truncate_metrics
from ..axes import parse_axes
from ..model_package import Normalization, SunModel, save_model
from ..networks import UNet2D, UNetConfig
from .losses import class_weights, dice_per_class, soft_dice_ce_loss
from .sampling import PatchSampler, TrainingVolume, augment, split_volume

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Parameters of :func:`train_sun` (all stored in the model's provenance).

    Attributes
    ----------
    axes : str
        Axes to take training slices from: ``3``, ``9`` or a comma-separated list.
    depth, base_width, norm, dropout, input_size
        Network architecture (:class:`~unified_framework.sun.networks.UNetConfig`);
        ``input_size`` is the side of the square training patches.
    batch_size : int
        Patches per step.
    steps : int
        Maximum number of optimisation steps.
    learning_rate, weight_decay : float
        AdamW settings; the learning rate decays polynomially (power 0.9) to 0.
    val_fraction : float
        Share of every volume (its last ``z`` slices) held out for validation (0: none);
        unused when :func:`train_sun` gets separate validation pairs.
    val_every : int
        Validate every this many steps.
    val_patches : int
        Fixed validation patches (drawn once from the held-out parts).
    patience : int
        Stop after this many validations without improvement (0: never stop early).
    checkpoint_every : int
        Write a resumable checkpoint every this many steps.
    log_every : int
        Write a training metrics line every this many steps.
    augment : bool
        Random flips, rotations, intensity changes and noise.
    class_weighting : bool
        Weight the cross-entropy by inverse square-root class frequencies. Off by
        default: with the Dice term already balancing classes, weighting made rare
        classes (the degradation layer) over-segmented on the implant phantom.
    foreground_fraction : float
        Share of patches centred on a non-background voxel.
    seed : int
        Seed of patch sampling, augmentation and initial weights.
    device : str or None
        ``cpu``, ``cuda`` or None (a GPU if present).
    amp : bool or None
        Mixed precision (default: on for GPUs).
    """

    axes: str = "9"
    depth: int = 4
    base_width: int = 16
    norm: str = "batch"
    dropout: float = 0.0
    input_size: int = 128
    batch_size: int = 8
    steps: int = 2000
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    val_every: int = 100
    val_patches: int = 64
    patience: int = 10
    checkpoint_every: int = 100
    log_every: int = 10
    augment: bool = True
    class_weighting: bool = False
    foreground_fraction: float = 0.33
    seed: int = 0
    device: str | None = None
    amp: bool | None = None

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "steps",
            "val_every",
            "val_patches",
            "checkpoint_every",
            "log_every",
        ):
            if int(getattr(self, name)) < 1:
                raise InputError(
                    f"training: {name}={getattr(self, name)!r}; expected a positive integer"
                )
        if not 0 <= self.val_fraction < 1:
            raise InputError(
                f"training: val_fraction={self.val_fraction!r}; expected 0 <= value < 1"
            )
        if self.learning_rate <= 0 or not math.isfinite(self.learning_rate):
            raise InputError(
                f"training: learning_rate={self.learning_rate!r}; expected a positive number"
            )
        parse_axes(self.axes)
        UNetConfig(
            1, 2, self.depth, self.base_width, self.norm, self.dropout, self.input_size
        )  # check the sizes early


@dataclass
class TrainingResult:
    """What :func:`train_sun` produced."""

    model: SunModel
    model_path: Path
    steps: int
    best_step: int
    best_score: float
    stopped_early: bool
    metrics_path: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def prepare_pairs(
    images: Sequence[Any],
    labels: Sequence[Any],
    names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> tuple[list[TrainingVolume], int, str]:
    """Check (image, labels) pairs and convert them for training.

    Returns
    -------
    volumes : list of TrainingVolume
    classes : int
        ``num_classes`` or the largest label + 1.
    dtype : str
        The images' dtype (recorded in the model).

    Raises
    ------
    InputError
        Empty input, shape or dtype mismatches, non-integer or negative labels, labels
        beyond ``num_classes``, NaN/infinite image values.
    """
    if not images or len(images) != len(labels):
        raise InputError(
            f"training: got {len(images)} images and {len(labels)} label volumes; expected matching, non-empty lists"
        )
    names = list(names) if names else [f"pair {i}" for i in range(len(images))]
    volumes, dtypes, top = [], set(), 0
    for name, image, label in zip(names, images, labels):
        image, label = np.asarray(image), np.asarray(label)
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4:
            raise InputError(
                f"{name}: image has shape {image.shape}; expected (z, y, x) or (channels, z, y, x)"
            )
        if label.shape != image.shape[1:]:
            raise InputError(
                f"{name}: labels have shape {label.shape} but the image {image.shape[1:]}; expected the same (z, y, x)"
            )
        if image.dtype.kind not in "uif":
            raise InputError(f"{name}: image dtype {image.dtype}; expected real numbers")
        if label.dtype.kind not in "ui":
            raise InputError(
                f"{name}: labels have dtype {label.dtype}; expected integer class indices"
            )
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise InputError(
                f"{name}: image contains NaN or infinite values; expected finite numbers"
            )
        if label.size and label.min() < 0:
            raise InputError(
                f"{name}: labels contain negative values; expected class indices 0..N-1"
            )
        top = max(top, int(label.max()) if label.size else 0)
        dtypes.add(str(image.dtype))
        volumes.append(TrainingVolume(image.astype(np.float32), label.astype(np.uint8)))
    if len({v.image.shape[0] for v in volumes}) != 1:
        raise InputError(
            "training: images have different numbers of channels; expected the same for all"
        )
    if len(dtypes) != 1:
        raise InputError(
            f"training: images have different dtypes {sorted(dtypes)}; expected one (the model records it)"
        )
    classes = num_classes or top + 1
    if top >= classes:
        raise InputError(f"training: labels go up to {top} but num_classes is {classes}")
    if classes < 2 or classes > 255:
        raise InputError(f"training: {classes} classes; expected 2..255")
    return volumes, classes, dtypes.pop()


def train_sun(
    images: Sequence[Any],
    labels: Sequence[Any],
    model_path: str | Path,
    config: TrainingConfig | None = None,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    sources: Sequence[str] | None = None,
    val_images: Sequence[Any] = (),
    val_labels: Sequence[Any] = (),
    val_sources: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    max_steps_this_run: int | None = None,
) -> TrainingResult:
    """Train a SUN model and save it as one model-package file.

    Parameters
    ----------
    images, labels : sequence of array-like
        Training pairs: images ``(z, y, x)`` or ``(channels, z, y, x)``, integer
        labels ``(z, y, x)``.
    model_path : path-like
        Where the model package goes (the best validated weights).
    config : TrainingConfig, optional
    class_names : sequence of str, optional
        Default ``class 0``, ``class 1``, ...
    num_classes : int, optional
        Default: largest label + 1.
    voxel_size : sequence of 3 float
        Micrometres (recorded in the model).
    sources : sequence of str, optional
        Names of the training files (provenance and messages).
    val_images, val_labels : sequence of array-like
        Separate validation pairs (e.g. a held-out scan). When given, the training
        volumes are used whole and ``config.val_fraction`` is ignored: a ``z`` split of
        one scan can miss a class altogether (the tip of a screw).
    val_sources : sequence of str, optional
        Names of the validation files.
    metrics_path : path-like, optional
        JSON lines; default ``<model_path>.metrics.jsonl``.
    checkpoint_path : path-like, optional
        Default ``<model_path>.checkpoint.pt``.
    resume : bool
        Continue from the checkpoint if there is one (else it is replaced).
    progress : bool
        Show a progress bar.
    max_steps_this_run : int, optional
        Stop after this many steps of this call (checkpointing first), as if killed;
        for time-sliced jobs and tests.

    Returns
    -------
    TrainingResult
    """
    import torch
    from tqdm.auto import tqdm

    from ..inference.predictor import resolve_device

    config = config or TrainingConfig()
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
    volumes, classes, input_dtype = prepare_pairs(images, labels, sources, num_classes)
    class_names = list(class_names) if class_names else [f"class {c}" for c in range(classes)]
    if len(class_names) != classes:
        raise InputError(f"training: {len(class_names)} class names for {classes} classes")
    axes = parse_axes(config.axes)
    channels = volumes[0].image.shape[0]
    architecture = UNetConfig(
        channels,
        classes,
        config.depth,
        config.base_width,
        config.norm,
        config.dropout,
        config.input_size,
    )
    device = resolve_device(config.device)
    amp = (device.type == "cuda") if config.amp is None else bool(config.amp)

    held_out: list[TrainingVolume] = []
    if len(val_images) or len(val_labels):
        val_sources = (
            list(val_sources)
            if val_sources
            else [f"validation pair {i}" for i in range(len(val_images))]
        )
        held_out, _, val_dtype = prepare_pairs(val_images, val_labels, val_sources, classes)
        if held_out[0].image.shape[0] != channels or val_dtype != input_dtype:
            raise InputError(
                f"{val_sources[0]}: {held_out[0].image.shape[0]} channel(s) of {val_dtype}; expected "
                f"{channels} of {input_dtype} like the training images"
            )
        train_volumes, val_volumes = volumes, held_out
    else:
        splits = [split_volume(v, config.val_fraction) for v in volumes]  # views into ``volumes``
        train_volumes = [train for train, _ in splits]
        val_volumes = [val for _, val in splits if val is not None]
    normalization = Normalization.fit([v.image for v in train_volumes], seed=config.seed)
    for volume in [
        *volumes,
        *held_out,
    ]:  # normalise in place once (views follow); patches come from normalised data
        normalization.apply(volume.image, channel_axis=0)
    weights = (
        class_weights([v.labels for v in train_volumes], classes)
        if config.class_weighting
        else np.ones(classes, np.float32)
    )
    sampler = PatchSampler(
        train_volumes, axes, classes, config.input_size, config.foreground_fraction
    )
    validation = None
    if val_volumes:
        val_rng = np.random.default_rng([config.seed, 1])
        validation = PatchSampler(
            val_volumes, axes, classes, config.input_size, config.foreground_fraction
        ).sample(val_rng, config.val_patches)

    torch.manual_seed(config.seed)
    network = UNet2D(architecture).to(device)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    weight_tensor = torch.from_numpy(weights).to(device)
    rng = np.random.default_rng([config.seed, 0])
    state = {
        "step": 0,
        "best_score": -math.inf,
        "best_step": 0,
        "bad_validations": 0,
        "best_state": None,
        "stopped_early": False,
    }
    identity = {
        "config": asdict(config),
        "architecture": asdict(architecture),
        "class_names": class_names,
    }
    if resume and checkpoint_path.is_file():
        state = _load_checkpoint(checkpoint_path, identity, network, optimizer, scaler, rng, device)
        truncate_metrics(metrics_path, state["step"])
        logger.info("resumed training from %s at step %d", checkpoint_path, state["step"])
    elif metrics_path.exists():
        metrics_path.unlink()

    def save_checkpoint() -> None:
        payload = {
            "identity": json.dumps(identity),
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "numpy_rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "state": {k: v for k, v in state.items() if k != "best_state"},
            "best_state": state["best_state"],
        }
        with atomic_path(checkpoint_path) as tmp:
            torch.save(payload, tmp)

    def validate() -> dict[str, Any]:
        network.eval()
        images_v, targets_v, valid_v = validation
        losses, predicted = [], []
        with torch.no_grad():
            for i in range(0, len(images_v), config.batch_size):
                x = torch.from_numpy(images_v[i : i + config.batch_size]).to(device)
                t = torch.from_numpy(targets_v[i : i + config.batch_size]).to(device)
                v = torch.from_numpy(valid_v[i : i + config.batch_size]).to(device)
                with torch.autocast(device.type, enabled=amp):
                    logits = network(x)
                losses.append(float(soft_dice_ce_loss(logits, t, v, weight_tensor)))
                predicted.append(logits.argmax(1).cpu().numpy())
        network.train()
        mask = valid_v > 0
        dice = dice_per_class(np.concatenate(predicted)[mask], targets_v.argmax(1)[mask], classes)
        foreground = dice[1:][~np.isnan(dice[1:])]
        return {
            "loss": float(np.mean(losses)),
            "dice": _named(dice, class_names),
            "mean_dice": float(foreground.mean()) if foreground.size else 0.0,
        }

    network.train()
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    window_start, window_pixels = time.perf_counter(), 0
    steps_this_run = 0
    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        desc="SUN train",
        unit="step",
        disable=None if progress else True,
    )
    # Every step allocates the same activations and gradients again (see utils.heap).
    with reuse_freed_memory():
        while state["step"] < config.steps and not state["stopped_early"]:
            if max_steps_this_run is not None and steps_this_run >= max_steps_this_run:
                save_checkpoint()
                break
            step = state["step"] + 1
            lr = config.learning_rate * (1 - (step - 1) / config.steps) ** 0.9
            for group in optimizer.param_groups:
                group["lr"] = lr
            images_b, targets_b, valid_b = sampler.sample(rng, config.batch_size)
            if config.augment:
                images_b, targets_b, valid_b = augment(rng, images_b, targets_b, valid_b)
            x = torch.from_numpy(np.ascontiguousarray(images_b)).to(device)
            t = torch.from_numpy(np.ascontiguousarray(targets_b)).to(device)
            v = torch.from_numpy(np.ascontiguousarray(valid_b)).to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                logits = network(x)
            loss = soft_dice_ce_loss(logits, t, v, weight_tensor)
            if not torch.isfinite(loss.detach()):
                raise InputError(
                    f"training diverged at step {step} (loss {loss.item()}); lower the learning rate"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["step"] = step
            steps_this_run += 1
            window_pixels += x.shape[0] * x.shape[2] * x.shape[3]
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                mask = valid_b > 0
                dice = dice_per_class(
                    logits.argmax(1).cpu().numpy()[mask], targets_b.argmax(1)[mask], classes
                )
                elapsed = time.perf_counter() - window_start
                line = {
                    "step": step,
                    "phase": "train",
                    "loss": loss.item(),
                    "dice": _named(dice, class_names),
                    "lr": lr,
                    "throughput_px_per_s": window_pixels / max(elapsed, 1e-9),
                    "time_s": time.perf_counter() - started,
                }
                append_metrics(metrics_path, line)
                history.append(line)
                bar.set_postfix(loss=f"{line['loss']:.3f}")
                window_start, window_pixels = time.perf_counter(), 0
            if validation is not None and (step % config.val_every == 0 or step == config.steps):
                scores = validate()
                improved = scores["mean_dice"] > state["best_score"] + 1e-4
                if improved:
                    state.update(best_score=scores["mean_dice"], best_step=step, bad_validations=0)
                    state["best_state"] = {
                        k: v.detach().cpu().clone() for k, v in network.state_dict().items()
                    }
                else:
                    state["bad_validations"] += 1
                    if config.patience and state["bad_validations"] >= config.patience:
                        state["stopped_early"] = True
                line = {
                    "step": step,
                    "phase": "val",
                    **scores,
                    "best": improved,
                    "time_s": time.perf_counter() - started,
                }
                append_metrics(metrics_path, line)
                history.append(line)
            if step % config.checkpoint_every == 0 or state["stopped_early"]:
                save_checkpoint()
    bar.close()
    finished = state["step"] >= config.steps or state["stopped_early"]
    best_state = state["best_state"] or {
        k: v.detach().cpu() for k, v in network.state_dict().items()
    }
    provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "framework_version": __version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
        "training_data": [
            {"name": n, "shape": list(v.labels.shape)}
            for n, v in zip(sources or [f"pair {i}" for i in range(len(volumes))], volumes)
        ],
        "validation_data": [
            {"name": n, "shape": list(v.labels.shape)} for n, v in zip(val_sources or [], held_out)
        ],
        "config": asdict(config),
        "class_weights": weights.tolist(),
        "steps": state["step"],
        "best_step": state["best_step"],
        "best_val_mean_dice": None if state["best_score"] == -math.inf else state["best_score"],
        "stopped_early": state["stopped_early"],
        "finished": finished,
    }
    model = SunModel(
        architecture,
        best_state,
        normalization,
        class_names,
        tuple(float(v) for v in voxel_size),
        axes,
        input_dtype,
        provenance,
    )
    save_model(model_path, model)
    return TrainingResult(
        model,
        model_path,
        state["step"],
        state["best_step"],
        state["best_score"],
        state["stopped_early"],
        metrics_path,
        history,
    )


def _named(scores: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    return {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, scores)}


def _load_checkpoint(
    path: Path, identity: dict, network, optimizer, scaler, rng: np.random.Generator, device
) -> dict[str, Any]:
    import torch

    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        stored_identity = json.loads(payload["identity"])
    except Exception as exc:  # damaged or foreign file
        raise InputError(
            f"{path}: not a readable SUN training checkpoint ({type(exc).__name__}); remove it or train without resume"
        ) from None
    if stored_identity != json.loads(json.dumps(identity)):
        raise InputError(
            f"{path}: checkpoint of a different training configuration; remove it or train without resume (--no-resume)"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    state = dict(payload["state"])
    state["best_state"] = payload["best_state"]
    return state
