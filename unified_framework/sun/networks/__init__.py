"""Networks of SUN (nnU-Net layout: one module per architecture)."""

from .unet2d import NORMS, UNet2D, UNetConfig, fold_batch_norm

__all__ = ["NORMS", "UNet2D", "UNetConfig", "fold_batch_norm"]
