"""nnU-Net's default trainer with the training length set by ``mdlma nnunet train``.

nnU-Net finds this class through ``nnUNet_extTrainer`` (set by
:mod:`unified_framework.nnunet.paths`). Epochs and iterations per epoch come from
``MDLMA_NNUNET_EPOCHS``, ``MDLMA_NNUNET_ITERATIONS`` and ``MDLMA_NNUNET_VAL_ITERATIONS``
(nnU-Net's defaults 1000, 250 and 50 when unset), so short CPU runs and tests need no
class per length. ``MDLMA_NNUNET_FINAL_VALIDATION=0`` skips the final validation pass
(with fold ``all`` it re-predicts every training case with mirroring, which dominates a
short CPU budget). Network, loss, augmentation and inference are nnU-Net's own.
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerMDLMA(nnUNetTrainer):
    """:class:`nnUNetTrainer` with epochs and iterations from the environment."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("MDLMA_NNUNET_EPOCHS", "1000"))
        self.num_iterations_per_epoch = int(os.environ.get("MDLMA_NNUNET_ITERATIONS", "250"))
        self.num_val_iterations_per_epoch = int(os.environ.get("MDLMA_NNUNET_VAL_ITERATIONS", "50"))

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation unless ``MDLMA_NNUNET_FINAL_VALIDATION=0``."""
        if os.environ.get("MDLMA_NNUNET_FINAL_VALIDATION", "1") == "0":
            return
        super().perform_actual_validation(save_probabilities)
