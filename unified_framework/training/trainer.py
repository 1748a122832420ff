"""A training loop with named steps, shared by every network the framework trains.

The shape follows nnU-Net's ``nnUNetTrainer``: one class owns the loop and its
bookkeeping, and a subclass says what is trained on what. :class:`Trainer` does

* **setup** (:meth:`Trainer.setup`): the device, mixed precision, the subclass's data
  (:meth:`Trainer.prepare_data`), the seeded network and optimiser, and either a
  resume from the checkpoint (cutting the metrics log back to it) or a fresh start;
* **one training step** (:meth:`Trainer.train_step`): the learning rate of the step, a
  batch (:meth:`Trainer.sample_batch`), forward and loss (:meth:`Trainer.compute_loss`),
  a divergence check, backward and the optimiser step; every ``log_every`` steps a
  ``train`` line in the metrics log (:meth:`Trainer.log_train`);
* **validation** (:meth:`Trainer.validation_step`): every ``val_every`` steps the
  subclass's scores (:meth:`Trainer.validate`), the best weights kept, a ``val`` line;
* **checkpoint** (:meth:`Trainer.save_checkpoint`, :meth:`Trainer.load_checkpoint`):
  weights, optimiser, gradient scaler, both random streams and the progress, written
  atomically, so that a resumed run continues exactly as the uninterrupted one;
* **early stop** (:meth:`Trainer.should_stop`): ``patience`` validations without
  improvement;
* **finish** (:meth:`Trainer.finish`): the subclass saves what it trained.

:meth:`Trainer.run` calls them in that order. ``SUNTrainer``
(:mod:`unified_framework.sun.training.trainer`) trains SUN's 2D U-Net on slices of
any axis; another 2D segmentation network subclasses it and replaces
:meth:`Trainer.build_network` (same sampling, losses, checkpoints and metrics).

Examples
--------
A subclass provides data, network, loss, validation and the checkpoint's identity:

>>> import numpy as np, torch
>>> from dataclasses import dataclass
>>> @dataclass
... class Settings:
...     steps: int = 4
...     batch_size: int = 2
...     learning_rate: float = 0.1
...     weight_decay: float = 0.0
...     val_every: int = 2
...     patience: int = 0
...     checkpoint_every: int = 2
...     log_every: int = 2
...     seed: int = 0
...     device: str | None = "cpu"
...     amp: bool | None = None
>>> class Line(Trainer[float]):
...     def build_network(self): return torch.nn.Linear(1, 1)
...     def sample_batch(self, rng): return torch.from_numpy(rng.normal(size=(2, 1)).astype("f4"))
...     def compute_loss(self, batch):
...         out = self.network(batch)
...         return ((out - 2 * batch) ** 2).mean(), out
...     def validate(self): return {"score": -float(self.compute_loss(torch.ones(1, 1))[0])}
...     def identity(self): return {"task": "line"}
...     def finish(self): return self.state.best_score
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> trainer = Line(Settings(), metrics_path=folder / "m.jsonl", checkpoint_path=folder / "c.pt")
>>> isinstance(trainer.run(), float), trainer.state.step
(True, 4)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from ..errors import InputError
from ..utils.atomic import atomic_path
from ..utils.device import resolve_device
from ..utils.heap import reuse_freed_memory
from ..utils.metrics_log import append_metrics, truncate_metrics

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


class LoopSettings(Protocol):
    """What the loop reads from a training configuration (e.g. ``TrainingConfig``)."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    val_every: int
    patience: int
    checkpoint_every: int
    log_every: int
    seed: int
    device: str | None
    amp: bool | None


@dataclass
class TrainState:
    """Progress of a run; everything but the weights is stored in the checkpoint's ``state``.

    Attributes
    ----------
    step : int
        Optimisation steps done.
    best_score : float
        Best validation score so far (``-inf``: none yet).
    best_step : int
        Step of the best validation.
    bad_validations : int
        Validations since the last improvement.
    stopped_early : bool
        ``patience`` ran out.
    best_weights : dict of str to torch.Tensor or None
        CPU copy of the weights at ``best_step``.
    """

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    bad_validations: int = 0
    stopped_early: bool = False
    best_weights: dict[str, torch.Tensor] | None = None

    def progress(self) -> dict[str, Any]:
        """The checkpoint's ``state`` entry (its keys predate this class)."""
        return {
            "step": self.step,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "stopped_early": self.stopped_early,
        }


@dataclass
class StepResult:
    """One training step: the batch, the network's outputs and the loss."""

    step: int
    learning_rate: float
    batch: Any
    outputs: torch.Tensor
    loss: torch.Tensor


class Trainer(ABC, Generic[ResultT]):
    """The loop: setup, training steps, validation, checkpoints, early stop, finish.

    Subclasses implement :meth:`build_network`, :meth:`sample_batch`,
    :meth:`compute_loss`, :meth:`validate`, :meth:`identity` and :meth:`finish`, and
    may override :meth:`prepare_data`, :meth:`build_optimizer`, :meth:`learning_rate`,
    :meth:`train_metrics`, :meth:`batch_units`, :meth:`validation_score`,
    :meth:`has_validation` and :meth:`identity_matches`.

    Parameters
    ----------
    settings : LoopSettings
        Steps, learning rate, intervals, patience, seed, device, mixed precision.
    metrics_path : path-like
        The JSON-lines metrics log (:mod:`unified_framework.utils.metrics_log`).
    checkpoint_path : path-like
        The resumable checkpoint (replaced atomically).
    resume : bool
        Continue from the checkpoint if there is one (else it is replaced).
    progress : bool
        Show a progress bar.
    max_steps_this_run : int, optional
        Stop after this many steps of this run (checkpointing first), as if killed;
        for time-sliced jobs and tests.
    """

    #: Named in messages ("not a readable SUN training checkpoint") and the progress bar.
    name = "model"
    #: A validation improves on the best one by more than this.
    min_improvement = 1e-4
    #: Metrics-log key of the throughput (:meth:`batch_units` per second).
    throughput_key = "throughput_px_per_s"

    def __init__(
        self,
        settings: LoopSettings,
        *,
        metrics_path: str | Path,
        checkpoint_path: str | Path,
        resume: bool = True,
        progress: bool = False,
        max_steps_this_run: int | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_path = Path(metrics_path)
        self.checkpoint_path = Path(checkpoint_path)
        self.resume = resume
        self.show_progress = progress
        self.max_steps_this_run = max_steps_this_run
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self.device = torch.device("cpu")
        self.amp = False

    # --- what a subclass provides -------------------------------------------------------

    def prepare_data(self) -> None:
        """Load, check, normalise and split the data (before the network is seeded)."""

    @abstractmethod
    def build_network(self) -> torch.nn.Module:
        """The network to train (created after ``torch.manual_seed(seed)``)."""

    def build_optimizer(self, network: torch.nn.Module) -> torch.optim.Optimizer:
        """AdamW with the settings' learning rate and weight decay."""
        return torch.optim.AdamW(
            network.parameters(),
            lr=self.settings.learning_rate,
            weight_decay=self.settings.weight_decay,
        )

    def learning_rate(self, step: int) -> float:
        """Learning rate of ``step`` (1-based): polynomial decay (power 0.9) to 0."""
        return self.settings.learning_rate * (1 - (step - 1) / self.settings.steps) ** 0.9

    @abstractmethod
    def sample_batch(self, rng: np.random.Generator) -> Any:
        """The next training batch, drawn (and augmented) with ``rng``."""

    @abstractmethod
    def compute_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, outputs)`` of ``batch``; run the network inside :meth:`autocast`."""

    def train_metrics(self, batch: Any, outputs: torch.Tensor) -> dict[str, Any]:
        """Scores of a training batch for its metrics line (e.g. Dice)."""
        return {}

    def batch_units(self, batch: Any) -> int:
        """Units (pixels) of a batch, for the throughput of the metrics lines."""
        return 0

    def has_validation(self) -> bool:
        """Whether there is validation data (without it: no validation, no early stop)."""
        return True

    @abstractmethod
    def validate(self) -> dict[str, Any]:
        """Validation scores (the network is in eval mode, gradients off)."""

    def validation_score(self, scores: dict[str, Any]) -> float:
        """The early-stopping score (larger is better) among :meth:`validate`'s scores."""
        return float(scores["score"])

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed (JSON-able: configuration, classes)."""

    def identity_matches(self, stored: dict[str, Any]) -> bool:
        """Whether a checkpoint's stored :meth:`identity` is this run's (as JSON)."""
        return bool(stored == json.loads(json.dumps(self.identity())))

    @abstractmethod
    def finish(self) -> ResultT:
        """Save and return what was trained (:meth:`best_weights` are the best validated)."""

    # --- the steps ---------------------------------------------------------------------

    def run(self) -> ResultT:
        """Setup, train until done, stopped early or the run's step limit; then finish."""
        self.setup()
        self.fit()
        return self.finish()

    def setup(self) -> None:
        """Device, data, seeded network and optimiser; resume or start afresh."""
        self.device = resolve_device(self.settings.device)
        self.amp = (
            (self.device.type == "cuda") if self.settings.amp is None else bool(self.settings.amp)
        )
        self.prepare_data()
        torch.manual_seed(self.settings.seed)
        self.network = self.build_network().to(self.device)
        self.optimizer = self.build_optimizer(self.network)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.rng = np.random.default_rng([self.settings.seed, 0])
        self.state = TrainState()
        if self.resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
            truncate_metrics(self.metrics_path, self.state.step)
            logger.info(
                "resumed training from %s at step %d", self.checkpoint_path, self.state.step
            )
        elif self.metrics_path.exists():
            self.metrics_path.unlink()

    def fit(self) -> None:
        """Train until the last step, an early stop or ``max_steps_this_run``."""
        from tqdm.auto import tqdm

        settings = self.settings
        self.network.train()
        self._started = time.perf_counter()
        self._window_start, self._window_units = time.perf_counter(), 0
        steps_this_run = 0
        bar = tqdm(
            total=settings.steps,
            initial=self.state.step,
            desc=f"{self.name} train",
            unit="step",
            disable=None if self.show_progress else True,
        )
        # Every step allocates the same activations and gradients again (see utils.heap).
        with reuse_freed_memory():
            while not self.should_stop():
                if (
                    self.max_steps_this_run is not None
                    and steps_this_run >= self.max_steps_this_run
                ):
                    self.save_checkpoint()
                    break
                result = self.train_step(self.state.step + 1)
                steps_this_run += 1
                bar.update()
                step = result.step
                if step % settings.log_every == 0 or step == settings.steps:
                    line = self.log_train(result)
                    bar.set_postfix(loss=f"{line['loss']:.3f}")
                if self.has_validation() and (
                    step % settings.val_every == 0 or step == settings.steps
                ):
                    self.validation_step(step)
                if step % settings.checkpoint_every == 0 or self.state.stopped_early:
                    self.save_checkpoint()
        bar.close()

    def should_stop(self) -> bool:
        """All steps done, or stopped early."""
        return self.state.step >= self.settings.steps or self.state.stopped_early

    @property
    def finished(self) -> bool:
        """The run is complete (not merely paused by ``max_steps_this_run``)."""
        return self.should_stop()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the forward pass when enabled."""
        return torch.autocast(self.device.type, enabled=self.amp)

    def train_step(self, step: int) -> StepResult:
        """One optimisation step (``step`` is 1-based)."""
        lr = self.learning_rate(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.sample_batch(self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss, outputs = self.compute_loss(batch)
        if not torch.isfinite(loss.detach()):
            raise InputError(
                f"training diverged at step {step} (loss {loss.item()}); lower the learning rate"
            )
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.step = step
        self._window_units += self.batch_units(batch)
        return StepResult(step, lr, batch, outputs, loss)

    def log_train(self, result: StepResult) -> dict[str, Any]:
        """Append a ``train`` line (loss, :meth:`train_metrics`, rate, throughput)."""
        elapsed = time.perf_counter() - self._window_start
        line = {
            "step": result.step,
            "phase": "train",
            "loss": result.loss.item(),
            **self.train_metrics(result.batch, result.outputs),
            "lr": result.learning_rate,
            self.throughput_key: self._window_units / max(elapsed, 1e-9),
            "time_s": time.perf_counter() - self._started,
        }
        self._record(line)
        self._window_start, self._window_units = time.perf_counter(), 0
        return line

    def validation_step(self, step: int) -> dict[str, Any]:
        """Validate, keep the best weights, count toward early stopping, append a ``val`` line."""
        self.network.eval()
        with torch.no_grad():
            scores = self.validate()
        self.network.train()
        score = self.validation_score(scores)
        state = self.state
        improved = score > state.best_score + self.min_improvement
        if improved:
            state.best_score, state.best_step, state.bad_validations = score, step, 0
            state.best_weights = {
                k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()
            }
        else:
            state.bad_validations += 1
            if self.settings.patience and state.bad_validations >= self.settings.patience:
                state.stopped_early = True
        line = {
            "step": step,
            "phase": "val",
            **scores,
            "best": improved,
            "time_s": time.perf_counter() - self._started,
        }
        self._record(line)
        return line

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best validated weights (the last ones without validation), on the CPU."""
        return self.state.best_weights or {
            k: v.detach().cpu() for k, v in self.network.state_dict().items()
        }

    def save_checkpoint(self) -> None:
        """Write the resumable checkpoint (atomically: a kill leaves the previous one)."""
        payload = {
            "identity": json.dumps(self.identity()),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "state": self.state.progress(),
            "best_state": self.state.best_weights,
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(payload, tmp)

    def load_checkpoint(self) -> None:
        """Restore weights, optimiser, scaler, random streams and progress.

        Raises
        ------
        InputError
            The file is damaged or foreign, or was written for another configuration.
        """
        path = self.checkpoint_path
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
            stored_identity = json.loads(payload["identity"])
        except Exception as exc:  # damaged or foreign file
            raise InputError(
                f"{path}: not a readable {self.name} training checkpoint ({type(exc).__name__}); remove it or train without resume"
            ) from None
        if not self.identity_matches(stored_identity):
            raise InputError(
                f"{path}: checkpoint of a different training configuration; remove it or train without resume (--no-resume)"
            )
        self.network.load_state_dict(payload["network"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.rng.bit_generator.state = json.loads(payload["numpy_rng"])
        torch.set_rng_state(payload["torch_rng"].cpu())
        progress = payload["state"]
        self.state = TrainState(
            step=int(progress["step"]),
            best_score=float(progress["best_score"]),
            best_step=int(progress["best_step"]),
            bad_validations=int(progress["bad_validations"]),
            stopped_early=bool(progress["stopped_early"]),
            best_weights=payload["best_state"],
        )

    def _record(self, line: dict[str, Any]) -> None:
        append_metrics(self.metrics_path, line)
        self.history.append(line)
