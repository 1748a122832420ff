"""The one choice of a torch device (``--device auto|cpu|cuda``)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError


def resolve_device(device: Any = None) -> Any:
    """``None``/``"auto"``: the first CUDA GPU if there is one, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    InputError
        A CUDA device was asked for on a machine without one.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: no CUDA GPU is available here; use --device cpu")
    return device
