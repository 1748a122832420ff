"""Training of a SUN model: slices from all chosen axes, checkpoints, resume, early stopping.

Metrics go to a JSON-lines file, one object per line::

    {"step": 120, "phase": "train", "loss": 0.41, "dice": {"bone": 0.83, ...},
     "lr": 0.0019, "throughput_px_per_s": 51234.0, "time_s": 12.3}
    {"step": 200, "phase": "val", "loss": 0.37, "dice": {...}, "mean_dice": 0.81, "best": true}

``dice`` of training lines is measured on the batch; ``mean_dice`` of validation lines
averages the non-background classes (the early-stopping score).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import __version__
from ...errors import InputError
from ...training import Trainer
from ..axes import parse_axes
from ..model_package import Normalization, SunModel, save_model
from ..networks import UNet2D, UNetConfig
from .losses import class_weights, dice_per_class, soft_dice_ce_loss
from .sampling import PatchSampler, TrainingVolume, augment, split_volume

logger = logging.getLogger(__name__)


#: The :class:`UNetConfig` fields a :class:`TrainingConfig` takes as keywords.
NETWORK_SHORTCUTS = ("depth", "base_width", "norm", "dropout", "input_size")


@dataclass
class TrainingConfig:
    """Parameters of :func:`train_sun` (all stored in the model's provenance).

    Attributes
    ----------
    axes : str
        Axes to take training slices from: ``3``, ``9`` or a comma-separated list.
    network : UNetConfig
        Network architecture (depth, base width, normalisation, dropout, input size:
        the side of the square training patches). Its ``in_channels`` and
        ``num_classes`` are placeholders: the trainer sets them from the data. The
        keywords ``depth``, ``base_width``, ``norm``, ``dropout`` and ``input_size``
        are shortcuts that replace those of ``network`` (the flat form of
        configurations saved before the nesting; read them from ``network``).
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
    network: UNetConfig = field(default_factory=lambda: UNetConfig(base_width=16))
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
    # Shortcuts into ``network`` (see above); not stored.
    depth: InitVar[int | None] = None
    base_width: InitVar[int | None] = None
    norm: InitVar[str | None] = None
    dropout: InitVar[float | None] = None
    input_size: InitVar[int | None] = None

    def __post_init__(
        self,
        depth: int | None,
        base_width: int | None,
        norm: str | None,
        dropout: float | None,
        input_size: int | None,
    ) -> None:
        if isinstance(self.network, Mapping):  # as stored by asdict()
            self.network = UNetConfig(**self.network)
        shortcuts: dict[str, Any] = {
            name: value
            for name, value in zip(
                NETWORK_SHORTCUTS, (depth, base_width, norm, dropout, input_size)
            )
            if value is not None
        }
        if shortcuts:
            self.network = replace(self.network, **shortcuts)  # checks the sizes early
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """The configuration of its ``asdict`` form, nested or flat (saved before the nesting).

        Raises
        ------
        InputError
            Unknown keys or invalid values.

        Examples
        --------
        >>> TrainingConfig.from_dict({"axes": "3", "depth": 2, "input_size": 16}).network.depth
        2
        """
        known = {f.name for f in fields(cls)} | set(NETWORK_SHORTCUTS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"training configuration: unknown keys {', '.join(unknown)}; expected those of TrainingConfig"
            )
        return cls(**data)


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


class SUNTrainer(Trainer[TrainingResult]):
    """SUN's training: slices of every chosen axis, soft Dice + cross-entropy, best-Dice model.

    The base :class:`~unified_framework.training.Trainer` runs the loop (checkpoints,
    resume, early stopping, metrics log); this class provides the data (normalised,
    split, sampled as square patches of slices along ``config.axes``, augmented), the
    loss and scores, and saves the best weights as a SUN model package.

    Another 2D segmentation network trains on the same patches, losses and checkpoints
    by passing ``network_factory`` (a callable taking the :class:`UNetConfig` with the
    data's channels and classes filled in, returning a ``torch.nn.Module`` mapping
    ``(batch, channels, size, size)`` to ``(batch, classes, size, size)`` logits) or
    by overriding :meth:`build_network` and :meth:`package_model`.

    Parameters are those of :func:`train_sun`, whose ``config`` becomes ``settings``.
    """

    name = "SUN"

    def __init__(
        self,
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
        network_factory: Callable[[UNetConfig], torch.nn.Module] | None = None,
    ) -> None:
        config = config or TrainingConfig()
        model_path = Path(model_path)
        # Checked here, before any work: bad pairs fail the call at once.
        volumes, classes, input_dtype = prepare_pairs(images, labels, sources, num_classes)
        channels = volumes[0].image.shape[0]
        #: The architecture with the data's channels and classes.
        self.architecture = replace(config.network, in_channels=channels, num_classes=classes)
        config = replace(config, network=self.architecture)
        super().__init__(
            config,
            metrics_path=metrics_path or model_path.with_name(model_path.name + ".metrics.jsonl"),
            checkpoint_path=checkpoint_path
            or model_path.with_name(model_path.name + ".checkpoint.pt"),
            resume=resume,
            progress=progress,
            max_steps_this_run=max_steps_this_run,
        )
        self.config = config
        self.model_path = model_path
        self.network_factory = network_factory or UNet2D
        self.voxel_size = tuple(float(v) for v in voxel_size)
        self.sources = sources
        self.val_sources = val_sources
        self.volumes, self.classes, self.input_dtype = volumes, classes, input_dtype
        self.class_names = (
            list(class_names) if class_names else [f"class {c}" for c in range(self.classes)]
        )
        if len(self.class_names) != self.classes:
            raise InputError(
                f"training: {len(self.class_names)} class names for {self.classes} classes"
            )
        self.axes = parse_axes(config.axes)
        self.channels = channels
        self.held_out: list[TrainingVolume] = []
        if len(val_images) or len(val_labels):
            self.val_sources = (
                list(val_sources)
                if val_sources
                else [f"validation pair {i}" for i in range(len(val_images))]
            )
            self.held_out, _, val_dtype = prepare_pairs(
                val_images, val_labels, self.val_sources, self.classes
            )
            if self.held_out[0].image.shape[0] != self.channels or val_dtype != self.input_dtype:
                raise InputError(
                    f"{self.val_sources[0]}: {self.held_out[0].image.shape[0]} channel(s) of {val_dtype}; expected "
                    f"{self.channels} of {self.input_dtype} like the training images"
                )
        self.validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # --- data ---------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Split (or take the separate validation pairs), normalise, fix validation patches."""
        config = self.config
        if self.held_out:
            train_volumes, val_volumes = self.volumes, self.held_out
        else:
            splits = [split_volume(v, config.val_fraction) for v in self.volumes]  # views
            train_volumes = [train for train, _ in splits]
            val_volumes = [val for _, val in splits if val is not None]
        self.normalization = Normalization.fit([v.image for v in train_volumes], seed=config.seed)
        # Normalise in place once (the split's views follow); patches come from normalised data.
        for volume in [*self.volumes, *self.held_out]:
            self.normalization.apply(volume.image, channel_axis=0)
        self.weights = (
            class_weights([v.labels for v in train_volumes], self.classes)
            if config.class_weighting
            else np.ones(self.classes, np.float32)
        )
        self.weight_tensor = torch.from_numpy(self.weights).to(self.device)
        self.sampler = PatchSampler(
            train_volumes,
            self.axes,
            self.classes,
            config.network.input_size,
            config.foreground_fraction,
        )
        self.validation = None
        if val_volumes:
            val_rng = np.random.default_rng([config.seed, 1])
            self.validation = PatchSampler(
                val_volumes,
                self.axes,
                self.classes,
                config.network.input_size,
                config.foreground_fraction,
            ).sample(val_rng, config.val_patches)

    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patches ``(images, one-hot targets, valid masks)``, augmented if configured."""
        batch = self.sampler.sample(rng, self.config.batch_size)
        if self.config.augment:
            batch = augment(rng, *batch)
        return batch

    def batch_units(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
        images = batch[0]
        return int(images.shape[0] * images.shape[2] * images.shape[3])

    # --- network and loss ---------------------------------------------------------------

    def build_network(self) -> torch.nn.Module:
        """``network_factory(architecture)``: SUN's :class:`UNet2D` unless replaced."""
        return self.network_factory(self.architecture)

    def _tensors(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]

    def compute_loss(
        self, batch: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft Dice + (optionally weighted) cross-entropy on the valid pixels."""
        x, t, v = self._tensors(batch)
        with self.autocast():
            logits = self.network(x)
        return soft_dice_ce_loss(logits, t, v, self.weight_tensor), logits

    def train_metrics(
        self, batch: tuple[np.ndarray, np.ndarray, np.ndarray], outputs: torch.Tensor
    ) -> dict[str, Any]:
        """Dice per class of the training batch."""
        _, targets, valid = batch
        mask = valid > 0
        dice = dice_per_class(
            outputs.argmax(1).cpu().numpy()[mask], targets.argmax(1)[mask], self.classes
        )
        return {"dice": _named(dice, self.class_names)}

    # --- validation ---------------------------------------------------------------------

    def has_validation(self) -> bool:
        return self.validation is not None

    def validate(self) -> dict[str, Any]:
        """Loss and Dice per class of the fixed validation patches; ``mean_dice`` scores."""
        assert self.validation is not None
        images_v, targets_v, valid_v = self.validation
        size = self.config.batch_size
        losses, predicted = [], []
        for i in range(0, len(images_v), size):
            x, t, v = self._tensors(
                (images_v[i : i + size], targets_v[i : i + size], valid_v[i : i + size])
            )
            with self.autocast():
                logits = self.network(x)
            losses.append(float(soft_dice_ce_loss(logits, t, v, self.weight_tensor)))
            predicted.append(logits.argmax(1).cpu().numpy())
        mask = valid_v > 0
        dice = dice_per_class(
            np.concatenate(predicted)[mask], targets_v.argmax(1)[mask], self.classes
        )
        foreground = dice[1:][~np.isnan(dice[1:])]
        return {
            "loss": float(np.mean(losses)),
            "dice": _named(dice, self.class_names),
            "mean_dice": float(foreground.mean()) if foreground.size else 0.0,
        }

    def validation_score(self, scores: dict[str, Any]) -> float:
        """Mean Dice of the non-background classes."""
        return float(scores["mean_dice"])

    # --- checkpoint identity and the model package ----------------------------------------

    def identity_matches(self, stored: dict[str, Any]) -> bool:
        """Also accepts the flat configuration of checkpoints written before the nesting."""
        try:
            config = TrainingConfig.from_dict(stored["config"])
            architecture = UNetConfig(**stored["architecture"])
        except (KeyError, TypeError, InputError):
            return False
        stored = {**stored, "config": asdict(replace(config, network=architecture))}
        return super().identity_matches(stored)

    def identity(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "architecture": asdict(self.architecture),
            "class_names": self.class_names,
        }

    def provenance(self) -> dict[str, Any]:
        """Training data, parameters, software versions and scores (stored in the model)."""
        state = self.state
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "framework_version": __version__,
            "torch_version": str(torch.__version__),
            "device": str(self.device),
            "training_data": [
                {"name": n, "shape": list(v.labels.shape)}
                for n, v in zip(
                    self.sources or [f"pair {i}" for i in range(len(self.volumes))], self.volumes
                )
            ],
            "validation_data": [
                {"name": n, "shape": list(v.labels.shape)}
                for n, v in zip(self.val_sources or [], self.held_out)
            ],
            "config": asdict(self.config),
            "class_weights": self.weights.tolist(),
            "steps": state.step,
            "best_step": state.best_step,
            "best_val_mean_dice": None if state.best_score == -math.inf else state.best_score,
            "stopped_early": state.stopped_early,
            "finished": self.finished,
        }

    def package_model(self) -> SunModel:
        """The SUN model package of the best weights."""
        return SunModel(
            self.architecture,
            self.best_weights(),
            self.normalization,
            self.class_names,
            self.voxel_size,
            self.axes,
            self.input_dtype,
            self.provenance(),
        )

    def finish(self) -> TrainingResult:
        """Save the model package; the result names it and the metrics log."""
        model = self.package_model()
        save_model(self.model_path, model)
        state = self.state
        return TrainingResult(
            model,
            self.model_path,
            state.step,
            state.best_step,
            state.best_score,
            state.stopped_early,
            self.metrics_path,
            self.history,
        )


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
    """Train a SUN model and save it as one model-package file (runs a :class:`SUNTrainer`).

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

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unified_framework.data import make_implant_phantom
    >>> image, labels = make_implant_phantom((16, 16, 16), seed=0)
    >>> config = TrainingConfig(axes="3", depth=2, base_width=4, input_size=16, steps=2)
    >>> result = train_sun([image], [labels], pathlib.Path(tempfile.mkdtemp()) / "m.pt", config)
    >>> result.steps
    2
    """
    return SUNTrainer(
        images,
        labels,
        model_path,
        config,
        class_names=class_names,
        num_classes=num_classes,
        voxel_size=voxel_size,
        sources=sources,
        val_images=val_images,
        val_labels=val_labels,
        val_sources=val_sources,
        metrics_path=metrics_path,
        checkpoint_path=checkpoint_path,
        resume=resume,
        progress=progress,
        max_steps_this_run=max_steps_this_run,
    ).run()


def _named(scores: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    return {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, scores)}
