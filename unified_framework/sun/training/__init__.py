"""Training of SUN models (``mdlma sun train``)."""

from .trainer import TrainingConfig, TrainingResult, prepare_pairs, train_sun

__all__ = ["TrainingConfig", "TrainingResult", "prepare_pairs", "train_sun"]
