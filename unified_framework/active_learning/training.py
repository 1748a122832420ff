"""Training a round of active learning on the labelled slices.

The labelled slices are 2D images with 2D labels (:data:`~.pool.IGNORE` where
unlabelled). They go through SUN's training pieces unchanged: each slice is a one-slice
:class:`~unified_framework.sun.training.sampling.TrainingVolume`, patches come from
SUN's :class:`~unified_framework.sun.training.sampling.PatchSampler` (a third centred
on foreground), SUN's augmentation and loss (cross-entropy + soft Dice), SUN's
intensity normalisation, and the shared metrics log. Ignored pixels carry no loss.
Checkpoints (weights, optimiser, random states) make a killed round resume exactly.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..sun.model_package import Normalization
from ..sun.training.losses import dice_per_class, soft_dice_ce_loss
from ..sun.training.sampling import PatchSampler, TrainingVolume, augment
from ..utils.atomic import atomic_path
from ..utils.heap import reuse_freed_memory
from ..utils.metrics_log import append_metrics, truncate_metrics
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
    """

    network: str = "hrnet"
    variant: str = "hrnet_w18_small"
    dropout: float = 0.1
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
            fields: dict[str, Any] = {"variant": self.variant, "dropout": self.dropout}
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


def _labelled_volumes(
    slices: Sequence[tuple[np.ndarray, np.ndarray]], classes: int
) -> list[TrainingVolume]:
    if not slices:
        raise InputError(
            "training: no labelled slices; label at least one slice (mdlma al query, then annotate)"
        )
    volumes = []
    for n, (image, labels) in enumerate(slices):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[None]
        if labels.shape != image.shape[1:]:
            raise InputError(
                f"labelled slice {n}: labels {labels.shape}, image {image.shape[1:]}; expected the same shape"
            )
        if not (labels != IGNORE).any():
            continue
        volumes.append(TrainingVolume(image[:, None].copy(), labels[None].astype(np.uint8)))
    if not volumes:
        raise InputError("training: every labelled slice is empty (all pixels unlabelled)")
    return volumes


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
        No labelled pixels, mismatched shapes, a checkpoint of other settings.
    """
    import torch
    from tqdm.auto import tqdm

    from ..networks import build_network, load_backbone_weights
    from ..sun.inference.predictor import resolve_device

    config = config or RoundConfig()
    classes = len(class_names)
    model_path = Path(model_path)
    metrics_path = Path(metrics_path or model_path.with_name(model_path.name + ".metrics.jsonl"))
    checkpoint_path = Path(
        checkpoint_path or model_path.with_name(model_path.name + ".checkpoint.pt")
    )
    volumes = _labelled_volumes(slices, classes)
    channels = volumes[0].image.shape[0]
    architecture = config.architecture(channels, classes)
    device = resolve_device(config.device)
    amp = device.type == "cuda"
    normalization = Normalization.fit([v.image for v in volumes], seed=config.seed)
    for volume in volumes:
        normalization.apply(volume.image, channel_axis=0)
    sampler = PatchSampler(volumes, ["z"], classes, config.input_size, config.foreground_fraction)
    torch.manual_seed(config.seed)
    network = build_network(config.network, architecture)
    if weights:
        if config.network != "hrnet":
            raise InputError("weights: backbone weights apply to HRNet only", field="weights")
        load_backbone_weights(network, weights)
    network.to(device)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    rng = np.random.default_rng([config.seed, 0])
    identity = json.dumps(
        {"config": asdict(config), "classes": list(class_names), "slices": len(slices)},
        sort_keys=True,
    )
    step = 0
    if resume and checkpoint_path.is_file():
        step = _load_checkpoint(checkpoint_path, identity, network, optimizer, scaler, rng, device)
        truncate_metrics(metrics_path, step)
    elif metrics_path.exists():
        metrics_path.unlink()

    def save_checkpoint() -> None:
        payload = {
            "identity": identity,
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "numpy_rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "step": step,
        }
        with atomic_path(checkpoint_path) as tmp:
            torch.save(payload, tmp)

    network.train()
    started = time.perf_counter()
    done_this_run = 0
    bar = tqdm(total=config.steps, initial=step, desc="AL train", unit="step", disable=not progress)
    with reuse_freed_memory():
        while step < config.steps:
            if max_steps_this_run is not None and done_this_run >= max_steps_this_run:
                save_checkpoint()
                bar.close()
                raise _Interrupted(step)
            lr = config.learning_rate * (1 - step / config.steps) ** 0.9
            for group in optimizer.param_groups:
                group["lr"] = lr
            images_b, targets_b, valid_b = sampler.sample(rng, config.batch_size)
            if config.augment:
                images_b, targets_b, valid_b = augment(rng, images_b, targets_b, valid_b)
            valid_b = valid_b * (targets_b.sum(axis=1) > 0.5)  # unlabelled pixels: no loss
            x = torch.from_numpy(np.ascontiguousarray(images_b)).to(device)
            t = torch.from_numpy(np.ascontiguousarray(targets_b)).to(device)
            v = torch.from_numpy(np.ascontiguousarray(valid_b, dtype=np.float32)).to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                logits = network(x)
            loss = soft_dice_ce_loss(logits, t, v)
            if not torch.isfinite(loss.detach()):
                raise InputError(
                    f"training diverged at step {step + 1} (loss {loss.item()}); lower the learning rate"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            done_this_run += 1
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                mask = valid_b > 0
                dice = dice_per_class(
                    logits.argmax(1).cpu().numpy()[mask], targets_b.argmax(1)[mask], classes
                )
                append_metrics(
                    metrics_path,
                    {
                        "step": step,
                        "phase": "train",
                        "loss": loss.item(),
                        "dice": {
                            n: (None if np.isnan(d) else float(d))
                            for n, d in zip(class_names, dice)
                        },
                        "lr": lr,
                        "time_s": time.perf_counter() - started,
                    },
                )
            if step % config.checkpoint_every == 0:
                save_checkpoint()
    bar.close()
    model = ALModel(
        config.network,
        architecture,
        {k: v.detach().cpu() for k, v in network.state_dict().items()},
        normalization,
        list(class_names),
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "framework_version": __version__,
            "device": str(device),
            "labelled_slices": len(slices),
            "config": asdict(config),
            "steps": step,
        },
    )
    save_al_model(model_path, model)
    checkpoint_path.unlink(missing_ok=True)
    return model


class _Interrupted(InputError):
    """Raised by ``max_steps_this_run``: the round stopped on purpose (checkpoint written)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped at step {step} on request; run it again to resume")
        self.step = step


def _load_checkpoint(
    path: Path, identity: str, network, optimizer, scaler, rng: np.random.Generator, device
) -> int:
    import torch

    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        stored = payload["identity"]
    except Exception as exc:  # damaged or foreign file
        raise InputError(
            f"{path}: not a readable training checkpoint ({type(exc).__name__}); remove it"
        ) from None
    if stored != identity:
        raise InputError(
            f"{path}: checkpoint of different settings or labelled slices; remove it to start afresh"
        )
    network.load_state_dict(payload["network"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    torch.set_rng_state(payload["torch_rng"].cpu())
    return int(payload["step"])


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
