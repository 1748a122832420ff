"""An active-learning model as one file: network kind and architecture, weights, normalisation.

The file is a ``torch.save`` archive of plain containers (loaded with
``weights_only=True``, so opening it cannot run code)::

    {"format": "mdlma-al-model", "format_version": 1,
     "network": {"kind": "hrnet", "config": {...}}, "state_dict": {...},
     "normalization": {"low": [...], "high": [...], "mean": [...], "std": [...]},
     "class_names": [...], "provenance": {...}}

The normalisation is SUN's (:class:`unified_framework.sun.model_package.Normalization`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..sun.model_package import Normalization, read_model_payload
from ..utils.atomic import atomic_path

FORMAT = "mdlma-al-model"
FORMAT_VERSION = 1


@dataclass
class ALModel:
    """A trained 2D segmentation network and what is needed to apply it.

    Attributes
    ----------
    kind : str
        ``hrnet`` or ``unet`` (:func:`unified_framework.networks.build_network`).
    config : HRNetConfig or UNetConfig
    state_dict : dict
    normalization : Normalization
    class_names : list of str
    provenance : dict
    """

    kind: str
    config: Any
    state_dict: dict
    normalization: Normalization
    class_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def divisor(self) -> int:
        """Slice sides the network needs multiples of (inputs are padded to it)."""
        return int(getattr(self.config, "divisor", 1))

    def network(self, device: Any = "cpu") -> Any:
        """The network with these weights, in eval mode."""
        from ..networks import build_network

        net = build_network(self.kind, self.config)
        net.load_state_dict(self.state_dict)
        return net.to(device).eval()

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Normalise raw float32 images ``(k, channels, rows, cols)`` in place."""
        return self.normalization.apply(images, channel_axis=1)


def save_al_model(path: str | Path, model: ALModel) -> Path:
    """Write ``model`` to ``path`` atomically and return the path."""
    import torch

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": {"kind": model.kind, "config": asdict(model.config)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict.items()},
        "normalization": asdict(model.normalization),
        "class_names": list(model.class_names),
        "provenance": json.loads(json.dumps(model.provenance, default=str)),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_al_model(path: str | Path) -> ALModel:
    """Read and validate an active-learning model file.

    Raises
    ------
    InputError
        Missing, damaged or foreign file, or weights that do not fit the architecture.
    """
    from ..networks import network_config

    path = Path(path)
    payload = read_model_payload(path, FORMAT, FORMAT_VERSION, "active-learning model")
    try:
        kind = str(payload["network"]["kind"])
        fields = dict(payload["network"]["config"])
        if kind == "hrnet":
            fields.setdefault("refine", 0)  # files from before the refinement path
        config = network_config(kind, fields)
        normalization = Normalization.from_payload(payload["normalization"])
        model = ALModel(
            kind,
            config,
            dict(payload["state_dict"]),
            normalization,
            [str(n) for n in payload["class_names"]],
            dict(payload.get("provenance") or {}),
        )
    except InputError as exc:
        raise InputError(f"{path}: invalid model file: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: invalid model file: missing or malformed field {exc}") from None
    try:
        model.network()
    except RuntimeError as exc:
        raise InputError(
            f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0][:160]})"
        ) from None
    return model
