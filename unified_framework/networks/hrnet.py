"""HRNet for 2D segmentation: a ``timm`` backbone and the HRNet segmentation head.

The backbone is one of timm's HRNets with ``features_only`` and random weights (nothing
is downloaded; user-provided weights are loaded from a file with :func:`load_backbone_weights`).
It returns the four parallel branches at 1/4, 1/8, 1/16 and 1/32 of the input size.
The head is the one of HRNetV2 (Wang et al., TPAMI 2020): every branch is upsampled
bilinearly to the highest resolution, they are concatenated, mixed by a 1x1
convolution with normalisation and ReLU, and a 1x1 convolution gives the class logits,
which are upsampled to the input size.

HRNet's stem reduces the input 4x before the first branch, so on the small images of
micro-CT slices (tens of pixels) thin structures (a degradation layer a few pixels
wide) are lost in the 1/4-resolution head. With ``refine > 0`` (the default) a light
full-resolution path (two 3x3 convolutions on the input) is concatenated with the
head's features, reduced to ``refine`` channels and upsampled to the input size, and a
3x3 convolution mixes them before the classifier: the network keeps HRNet's
multi-resolution context and recovers boundaries at pixel level (like the
full-resolution skip of a U-Net). ``refine=0`` is the plain HRNetV2 head.

Inputs of any size work: they are padded (edge values) to a multiple of 32, the
backbone's total stride, and the logits are cropped back. A channel dropout before the
classifier makes Monte-Carlo dropout possible (:func:`mc_dropout`), which BALD needs;
its concatenated branch features, averaged over the image, are the slice embedding the
core-set acquisition uses (``forward(x, return_features=True)``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

#: timm HRNet variants that fit on a workstation (``hrnet_w18_small`` is the smallest).
VARIANTS = (
    "hrnet_w18_small",
    "hrnet_w18_small_v2",
    "hrnet_w18",
    "hrnet_w30",
    "hrnet_w32",
    "hrnet_w48",
)
STRIDE = 32


@dataclass(frozen=True)
class HRNetConfig:
    """Architecture of :class:`HRNetSeg`; stored in every model file.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    num_classes : int
        Output classes.
    variant : str
        A timm HRNet name from :data:`VARIANTS`.
    dropout : float
        Channel dropout before the classifier (MC dropout for BALD; 0 disables it).
    input_size : int
        Side of the square training patches (a multiple of 32).
    refine : int
        Channels of the full-resolution refinement path (0: the plain HRNetV2 head,
        logits upsampled from 1/4 of the input size).

    Examples
    --------
    >>> HRNetConfig(num_classes=3).variant
    'hrnet_w18_small'
    """

    in_channels: int = 1
    num_classes: int = 4
    variant: str = "hrnet_w18_small"
    dropout: float = 0.1
    input_size: int = 64
    refine: int = 16

    def __post_init__(self) -> None:
        checks = (
            (self.in_channels >= 1, "in_channels must be >= 1"),
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.refine >= 0, "refine must be >= 0"),
            (
                self.input_size >= STRIDE and self.input_size % STRIDE == 0,
                f"input_size must be a multiple of {STRIDE}",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(f"HRNet architecture: {message} (got {asdict(self)})")

    @property
    def divisor(self) -> int:
        """Inputs are padded internally, so any size works (1)."""
        return 1


def _backbone(config: HRNetConfig) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's HRNet uses the deprecated torch.jit.interface
        import timm

        return timm.create_model(
            config.variant,
            pretrained=False,
            features_only=True,
            in_chans=config.in_channels,
            feature_location="",  # the raw branches (not the classification "incre" blocks)
            out_indices=(1, 2, 3, 4),
        )


class HRNetSeg(nn.Module):
    """HRNet backbone + HRNetV2 head returning logits of the input's size.

    Parameters
    ----------
    config : HRNetConfig

    Examples
    --------
    >>> net = HRNetSeg(HRNetConfig(num_classes=3)).eval()
    >>> net(torch.zeros(2, 1, 33, 47)).shape
    torch.Size([2, 3, 33, 47])
    >>> logits, features = net(torch.zeros(1, 1, 40, 40), return_features=True)
    >>> features.shape[0], features.ndim
    (1, 2)
    """

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _backbone(config)
        width = sum(self.backbone.feature_info.channels())
        self.mix = nn.Sequential(
            nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        head = width
        if config.refine > 0:
            r = config.refine
            # Full-resolution path on the input, and the head's features reduced to r channels.
            self.full_resolution = nn.Sequential(
                *_conv_bn_relu(config.in_channels, r), *_conv_bn_relu(r, r)
            )
            self.reduce = nn.Sequential(*_conv_bn_relu(width, r, kernel=1))
            self.fuse = nn.Sequential(*_conv_bn_relu(2 * r, 2 * r))
            head = 2 * r
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        # Registered last: acquisition's core-set embedding is the input of the last convolution.
        self.classifier = nn.Conv2d(head, config.num_classes, 1)

    @property
    def feature_width(self) -> int:
        """Length of the slice embedding (the classifier's input channels)."""
        return int(self.classifier.in_channels)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(N, classes, H, W)``; with ``return_features`` also ``(N, width)`` embeddings."""
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % STRIDE, (-width) % STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        branches = self.backbone(x)
        size = branches[0].shape[-2:]
        joined = torch.cat(
            [branches[0]]
            + [
                F.interpolate(b, size=size, mode="bilinear", align_corners=False)
                for b in branches[1:]
            ],
            dim=1,
        )
        mixed = self.mix(joined)
        if self.config.refine > 0:
            coarse = F.interpolate(
                self.reduce(mixed), size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            mixed = self.fuse(torch.cat([self.full_resolution(x), coarse], dim=1))
            logits = self.classifier(self.dropout(mixed))
        else:
            logits = self.classifier(self.dropout(mixed))
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :height, :width]
        if return_features:
            return logits, mixed.mean(dim=(2, 3))
        return logits


def _conv_bn_relu(inputs: int, outputs: int, kernel: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


def load_backbone_weights(network: HRNetSeg, path: str | Path) -> list[str]:
    """Load user-provided backbone weights (a ``state_dict`` file) into ``network``.

    Keys may carry timm's classification names (``conv1.weight``) or a ``backbone.``
    prefix; the classifier of an ImageNet checkpoint and other keys the feature
    extractor does not have are ignored and returned.

    Parameters
    ----------
    network : HRNetSeg
    path : path-like
        A ``torch.save``-d state dict (loaded with ``weights_only=True``).

    Returns
    -------
    list of str
        The keys of the file that were not used.

    Raises
    ------
    InputError
        If the file cannot be read, or no key or shape fits the backbone.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise InputError(
            f"{path}: not a readable weights file ({type(exc).__name__})", field="weights"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of tensors", field="weights")
    own = network.backbone.state_dict()
    usable, unused = {}, []
    for key, value in state.items():
        name = key.removeprefix("backbone.")
        if name in own and getattr(value, "shape", None) == own[name].shape:
            usable[name] = value
        else:
            unused.append(key)
    if not usable:
        raise InputError(
            f"{path}: no weight fits the {network.config.variant} backbone "
            f"({network.config.in_channels} input channel(s))",
            field="weights",
        )
    network.backbone.load_state_dict(usable, strict=False)
    return unused


@contextlib.contextmanager
def mc_dropout(network: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``network`` with its dropout layers active (Monte-Carlo dropout).

    Normalisation layers stay in eval mode, so only the dropout masks vary between
    forward passes. The previous modes are restored afterwards.

    Examples
    --------
    >>> net = HRNetSeg(HRNetConfig(num_classes=2, dropout=0.5)).eval()
    >>> x = torch.ones(1, 1, 32, 32)
    >>> with mc_dropout(net), torch.no_grad():
    ...     differ = not torch.equal(net(x), net(x))
    >>> differ, net.training
    (True, False)
    """
    modes = {module: module.training for module in network.modules()}
    network.eval()
    for module in network.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    try:
        yield network
    finally:
        for module, mode in modes.items():
            module.train(mode)
