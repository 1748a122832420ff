"""The training loop every trained network shares (:class:`Trainer`); see ``docs/architecture.md``."""

from .trainer import LoopSettings, StepResult, Trainer, TrainState

__all__ = ["LoopSettings", "StepResult", "TrainState", "Trainer"]
