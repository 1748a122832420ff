"""2D segmentation networks shared by the methods: HRNet (here) and SUN's U-Net.

:func:`build_network` makes either from a kind and its configuration, so training,
active learning and model files name an architecture as ``{"kind": ..., "config": {...}}``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..errors import InputError
from .hrnet import VARIANTS, HRNetConfig, HRNetSeg, load_backbone_weights, mc_dropout

#: Network kinds :func:`build_network` knows.
KINDS = ("hrnet", "unet")


def network_config(kind: str, config: dict[str, Any]) -> Any:
    """The configuration object of ``kind`` (``HRNetConfig`` or SUN's ``UNetConfig``).

    Raises
    ------
    InputError
        For an unknown kind or invalid fields.

    Examples
    --------
    >>> network_config("hrnet", {"num_classes": 3}).num_classes
    3
    """
    from ..sun.networks import UNetConfig

    classes = {"hrnet": HRNetConfig, "unet": UNetConfig}
    if kind not in classes:
        raise InputError(
            f"network: kind {kind!r}; expected one of {', '.join(KINDS)}", field="network"
        )
    try:
        return classes[kind](**config)
    except TypeError as exc:
        raise InputError(
            f"network: invalid {kind} configuration ({exc})", field="network"
        ) from None


def build_network(kind: str, config: Any) -> Any:
    """A new, randomly initialised network of ``kind`` with ``config`` (object or dict).

    Examples
    --------
    >>> net = build_network("unet", {"num_classes": 2, "depth": 2, "base_width": 4})
    >>> type(net).__name__
    'UNet2D'
    """
    if isinstance(config, dict):
        config = network_config(kind, config)
    if kind == "hrnet":
        return HRNetSeg(config)
    from ..sun.networks import UNet2D

    return UNet2D(config)


def describe(kind: str, config: Any) -> dict[str, Any]:
    """``{"kind": ..., "config": {...}}`` (plain JSON types), how model files store a network."""
    return {"kind": kind, "config": asdict(config)}


__all__ = [
    "KINDS",
    "VARIANTS",
    "HRNetConfig",
    "HRNetSeg",
    "build_network",
    "describe",
    "load_backbone_weights",
    "mc_dropout",
    "network_config",
]
