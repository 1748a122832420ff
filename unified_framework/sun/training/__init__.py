"""Training of SUN models (``mdlma sun train``)."""

from .trainer import SUNTrainer, TrainingConfig, TrainingResult, prepare_pairs, train_sun

__all__ = ["SUNTrainer", "TrainingConfig", "TrainingResult", "prepare_pairs", "train_sun"]
