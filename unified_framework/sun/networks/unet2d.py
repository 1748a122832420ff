"""A 2D U-Net whose three SUN scaling dimensions (depth, width, input size) are parameters."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...errors import InputError

NORMS = ("batch", "instance", "group", "none")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet2D`; stored in every model package.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    num_classes : int
        Output classes (softmax channels).
    depth : int
        Resolution levels, counting the bottleneck; slices are padded to multiples of
        ``2 ** (depth - 1)``.
    base_width : int
        Feature maps of the first level; doubled at each level down to ``max_width``.
    norm : str
        ``batch``, ``instance``, ``group`` (up to 8 groups) or ``none``.
    dropout : float
        Channel dropout probability after each block of the two deepest levels.
    input_size : int
        Side of the square training patches (the third scaling dimension); at
        inference the network is applied to whole slices.
    max_width : int
        Upper bound of the feature maps per level.
    """

    in_channels: int = 1
    num_classes: int = 4
    depth: int = 4
    base_width: int = 32
    norm: str = "batch"
    dropout: float = 0.0
    input_size: int = 128
    max_width: int = 512

    def __post_init__(self) -> None:
        checks = (
            (self.in_channels >= 1, "in_channels must be >= 1"),
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (1 <= self.depth <= 8, "depth must be 1..8"),
            (self.base_width >= 1, "base_width must be >= 1"),
            (self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (
                self.input_size >= 2 ** (self.depth - 1)
                and self.input_size % 2 ** (self.depth - 1) == 0,
                f"input_size must be a multiple of 2**(depth-1) = {2 ** (self.depth - 1)}",
            ),
            (self.max_width >= self.base_width, "max_width must be >= base_width"),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(f"U-Net architecture: {message} (got {asdict(self)})")

    @property
    def divisor(self) -> int:
        """Slice sides must be multiples of this (one halving per level below the first)."""
        return 2 ** (self.depth - 1)

    def widths(self) -> list[int]:
        """Feature maps per level, from the top."""
        return [min(self.base_width * 2**level, self.max_width) for level in range(self.depth)]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU (optional dropout)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dropout: float) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=bias),
                _norm(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet2D(nn.Module):
    """2D U-Net (Ronneberger et al. 2015) returning class logits of the input's size.

    Parameters
    ----------
    config : UNetConfig
        The architecture.

    Examples
    --------
    >>> net = UNet2D(UNetConfig(depth=3, base_width=8))
    >>> net(torch.zeros(2, 1, 32, 48)).shape
    torch.Size([2, 4, 32, 48])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths()
        deep = lambda level: config.dropout if level >= config.depth - 2 else 0.0  # noqa: E731
        self.encoder = nn.ModuleList()
        channels = config.in_channels
        for level, width in enumerate(widths):
            self.encoder.append(ConvBlock(channels, width, config.norm, deep(level)))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(config.depth - 1)):
            self.upsample.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoder.append(
                ConvBlock(2 * widths[level], widths[level], config.norm, deep(level))
            )
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``; ``H`` and ``W`` must be multiples of ``config.divisor``."""
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        for up, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def fold_batch_norm(network: UNet2D) -> UNet2D:
    """A copy of ``network`` for inference, with batch norms folded into the convolutions.

    In eval mode a batch norm is an affine map per channel, so it can be merged into
    the weights and bias of the convolution before it; this saves a pass over every
    feature map. The copy is in eval mode and must not be trained.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    network = copy.deepcopy(network).eval()
    for block in network.modules():
        if isinstance(block, ConvBlock):
            for i in range(len(block) - 1):
                conv, norm = block[i], block[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    block[i] = fuse_conv_bn_eval(conv, norm)
                    block[i + 1] = nn.Identity()
    return network
