"""Training a round of active learning on the labelled slices, with SUN's trainer.

The labelled slices are 2D images with 2D labels (:data:`~.pool.IGNORE` where
unlabelled). :class:`ALTrainer` is a :class:`~unified_framework.sun.training.SUNTrainer`
(the shared :class:`~unified_framework.training.Trainer` loop) on one-slice volumes:
the same patch sampling (a third centred on foreground), augmentation, loss
(cross-entropy + soft Dice), intensity normalisation, resumable checkpoints and metrics
log as SUN training. It builds an HRNet (or SUN's U-Net), gives unlabelled pixels no
loss, and saves an :class:`~.model.ALModel`. There is no validation split: a round
trains a fixed number of steps on every labelled slice (the held-out Dice of the
simulation and the project is measured afterwards, :func:`evaluate`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..sun.training import SUNTrainer, TrainingConfig
from .model import ALModel, save_al_model
from .pool import IGNORE

logger = logging.getLogger(__name__)


@dataclass
class RoundConfig:
    """Settings of one training round (stored in the model's provenance).

    Attributes
    ----------
    network : str
        ``hrnet`` (default) or ``unet`` (SUN's U-Net).
    variant : str
        timm HRNet variant.
    dropout : float
        Dropout before the classifier (HRNet) or in the deepest U-Net levels; > 0 for BALD.
    refine : int
        Channels of HRNet's full-resolution refinement path (0: the plain HRNetV2 head).
    depth, base_width : int
        U-Net size (``network="unet"``).
    input_size : int
        Side of the square training patches.
    steps, batch_size : int
    learning_rate, weight_decay : float
        AdamW; the learning rate decays polynomially (power 0.9) to 0.
    augment : bool
    foreground_fraction : float
    seed : int
    checkpoint_every, log_every : int
    device : str or None
    weights : str or None
        A user-provided HRNet backbone weights file (state dict); None: random init.
    """

    network: str = "hrnet"
    variant: str = "hrnet_w18_small"
    dropout: float = 0.1
    refine: int = 16
    depth: int = 3
    base_width: int = 16
    input_size: int = 64
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    foreground_fraction: float = 0.33
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    device: str | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(
                    f"training: {name}={getattr(self, name)!r}; expected a positive integer",
                    field=name,
                )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InputError(
                f"training: learning_rate={self.learning_rate!r}; expected a positive number",
                field="learning_rate",
            )
        self.architecture(1, 2)  # checks the network fields early

    def architecture(self, channels: int, classes: int) -> Any:
        """The network configuration for ``channels`` inputs and ``classes`` outputs."""
        from ..networks import network_config

        if self.network == "hrnet":
            fields: dict[str, Any] = {
                "variant": self.variant,
                "dropout": self.dropout,
                "refine": self.refine,
            }
        else:
            fields = {
                "depth": self.depth,
                "base_width": self.base_width,
                "dropout": self.dropout,
                "norm": "batch",
            }
        return network_config(
            self.network,
            {
                "in_channels": channels,
                "num_classes": classes,
                "input_size": self.input_size,
                **fields,
            },
        )

    def loop_settings(self) -> TrainingConfig:
        """SUN's training configuration for these settings (axis ``z`` of one-slice volumes)."""
        return TrainingConfig(
            axes="z",
            depth=self.depth,
            base_width=self.base_width,
            norm="batch",
            dropout=self.dropout,
            input_size=self.input_size,
            batch_size=self.batch_size,
            steps=self.steps,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            val_fraction=0.0,
            val_every=self.steps,
            patience=0,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            augment=self.augment,
            foreground_fraction=self.foreground_fraction,
            seed=self.seed,
            device=self.device,
        )


def _slice_arrays(
    slices: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One-slice volumes ``(channels, 1, rows, cols)`` and labels ``(1, rows, cols)``."""
    if not slices:
        raise InputError(
            "training: no labelled slices; label at least one slice (mdlma al query, then annotate)"
        )
    images, labels = [], []
    for n, (image, label) in enumerate(slices):
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 2 else image
        label = np.asarray(label)
        if label.shape != image.shape[1:]:
            raise InputError(
                f"labelled slice {n}: labels {label.shape}, image {image.shape[1:]}; expected the same shape"
            )
        if (label != IGNORE).any():
            images.append(image[:, None])
            labels.append(label[None].astype(np.uint8))
    if not images:
        raise InputError("training: every labelled slice is empty (all pixels unlabelled)")
    return images, labels


class ALTrainer(SUNTrainer):
    """SUN's trainer on labelled slices, with an HRNet (or U-Net) and an :class:`ALModel` file.

    Parameters
    ----------
    slices : sequence of (image, labels)
        See :func:`train_round`.
    model_path : path-like
    config : RoundConfig
    class_names : sequence of str
    weights : path-like, optional
        HRNet backbone weights (a state-dict file).
    **kwargs
        ``metrics_path``, ``checkpoint_path``, ``resume``, ``progress``,
        ``max_steps_this_run`` of :class:`~unified_framework.training.Trainer`.
    """

    name = "active-learning"

    def __init__(
        self,
        slices: Sequence[tuple[np.ndarray, np.ndarray]],
        model_path: str | Path,
        config: RoundConfig,
        *,
        class_names: Sequence[str],
        weights: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        images, labels = _slice_arrays(slices)
        # SUN's checks refuse label 255; unlabelled pixels become 255 again below.
        unlabelled = [lab == IGNORE for lab in labels]
        checked = [np.where(mask, 0, lab) for mask, lab in zip(unlabelled, labels)]
        for n, lab in enumerate(checked):
            if lab.size and lab.max() >= len(class_names):
                raise InputError(
                    f"labelled slice {n}: label value {int(lab.max())} is outside the class list "
                    f"0..{len(class_names) - 1} ({IGNORE}: unlabelled)"
                )
        super().__init__(
            images,
            checked,
            model_path,
            config.loop_settings(),
            class_names=class_names,
            num_classes=len(class_names),
            sources=[f"labelled slice {n}" for n in range(len(images))],
            **kwargs,
        )
        for volume, mask in zip(self.volumes, unlabelled):
            volume.labels[mask] = IGNORE  # one-hot targets of 255 are all zero: no loss
        self.round_config = config
        self.weights_file = weights or config.weights
        self.network_architecture = config.architecture(self.channels, self.classes)
        digest = hashlib.sha256()
        for label in labels:
            digest.update(np.ascontiguousarray(label).tobytes())
        self.labels_digest = digest.hexdigest()

    def build_network(self) -> Any:
        """HRNet (user backbone weights if given) or SUN's U-Net, per the round's settings."""
        from ..networks import build_network, load_backbone_weights

        if self.weights_file and self.round_config.network != "hrnet":
            raise InputError("weights: backbone weights apply to HRNet only", field="weights")
        network = build_network(self.round_config.network, self.network_architecture)
        if self.weights_file:
            unused = load_backbone_weights(network, self.weights_file)
            logger.info("loaded backbone weights; %d keys unused", len(unused))
        return network

    def sample_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SUN's patches; pixels without a label (all-zero one-hot target) carry no loss."""
        images, targets, valid = super().sample_batch(rng)
        return images, targets, valid * (targets.sum(axis=1) > 0.5)

    def identity(self) -> dict[str, Any]:
        return {
            **super().identity(),
            "round": asdict(self.round_config),
            "network": {"kind": self.round_config.network, **asdict(self.network_architecture)},
            "labels": self.labels_digest,
        }

    def finish(self) -> ALModel | None:  # type: ignore[override]
        """Save the model once every step is done (None when paused by ``max_steps_this_run``)."""
        if not self.finished:
            return None
        provenance = self.provenance()
        provenance["round_config"] = asdict(self.round_config)
        model = ALModel(
            self.round_config.network,
            self.network_architecture,
            self.best_weights(),
            self.normalization,
            list(self.class_names),
            provenance,
        )
        save_al_model(self.model_path, model)
        self.checkpoint_path.unlink(missing_ok=True)
        return model


def train_round(
    slices: Sequence[tuple[np.ndarray, np.ndarray]],
    model_path: str | Path,
    config: RoundConfig | None = None,
    *,
    class_names: Sequence[str],
    weights: str | Path | None = None,
    metrics_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    max_steps_this_run: int | None = None,
) -> ALModel:
    """Train a network on labelled slices and save it as an :class:`~.model.ALModel` file.

    Parameters
    ----------
    slices : sequence of (image, labels)
        Raw images ``(channels, rows, cols)`` or ``(rows, cols)`` and uint8 labels
        ``(rows, cols)`` (:data:`~.pool.IGNORE`: no label).
    model_path : path-like
    config : RoundConfig, optional
    class_names : sequence of str
    weights : path-like, optional
        User-provided HRNet backbone weights (a state-dict file).
    metrics_path, checkpoint_path : path-like, optional
        Default ``<model_path>.metrics.jsonl`` and ``<model_path>.checkpoint.pt``.
    resume : bool
        Continue from the checkpoint if there is one.
    progress : bool
        Show a progress bar.
    max_steps_this_run : int, optional
        Stop after this many steps (checkpointing first), as if killed.

    Returns
    -------
    ALModel
        Also written to ``model_path`` (only once every step is done).

    Raises
    ------
    InputError
        No labelled pixels, mismatched shapes, labels outside the class list, a
        checkpoint of other settings or labels; ``max_steps_this_run`` reached (the
        message says to run again).
    """
    trainer = ALTrainer(
        slices,
        model_path,
        config or RoundConfig(),
        class_names=class_names,
        weights=weights,
        metrics_path=metrics_path,
        checkpoint_path=checkpoint_path,
        resume=resume,
        progress=progress,
        max_steps_this_run=max_steps_this_run,
    )
    trainer.setup()
    trainer.fit()
    model = trainer.finish()
    if model is None:
        raise InputError(
            f"training stopped at step {trainer.state.step} of {trainer.settings.steps} on request; "
            "run it again to resume"
        )
    return model


def evaluate(
    model: ALModel,
    images: Sequence[Any],
    labels: Sequence[Any],
    axis: str = "z",
    device: Any = "cpu",
) -> dict[str, float | None]:
    """Held-out Dice per class of slice-wise predictions along ``axis``.

    Every slice of every held-out volume is predicted; the confusion matrix over all
    their pixels gives the Dice (None for a class absent from truth and prediction).

    Examples
    --------
    See ``tests/test_al_loop.py``.
    """
    from ..metrics.overlap import confusion_matrix, scores_from_confusion
    from .acquisition import predict_slice
    from .pool import SlicePool

    classes = len(model.class_names)
    network = model.network(device)
    pool = SlicePool(images, axes=axis)
    matrix = np.zeros((classes, classes), np.int64)
    for sid in pool.ids:
        truth = pool.label(labels[sid.volume], sid, classes)
        inside = truth != IGNORE
        predicted = predict_slice(
            network, pool.image(sid), model.normalize, device, model.divisor
        ).argmax(axis=0)
        part, _ = confusion_matrix(predicted[inside], truth[inside], labels=range(classes))
        matrix += part
    dice = scores_from_confusion(matrix)["dice"]
    return {n: (None if np.isnan(d) else float(d)) for n, d in zip(model.class_names, dice)}
