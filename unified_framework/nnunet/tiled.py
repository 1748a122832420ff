"""A trained (or imported) nnU-Net model as a tile model of :mod:`unified_framework.inference`.

The tiled engine cuts the image into overlapping patches, blends them and writes the
result; this adapter only turns a batch of raw patches into class probabilities with
nnU-Net's own parts: the network its trainer builds from the plans
(:class:`nnunetv2.inference.predict_from_raw_data.nnUNetPredictor`), the plans'
intensity normalisation classes, its fold averaging and (optionally) its test-time
mirroring.

* ``2d`` models predict 2D images patch by patch, and 3D volumes slice by slice along
  ``z`` (each patch ``(z, y, x)`` is a stack of ``z`` slices through the 2D network).
* ``3d_fullres`` and ``3d_lowres`` models predict 3D patches of volumes.

Patches are not resampled: the image should have the model's voxel size, as for
``mdlma sun predict``. Normalisation schemes with fixed statistics (nnU-Net's
``CTNormalization`` for CT channels, ``NoNormalization``, ``RGBTo01Normalization``) give
what nnU-Net gives; per-image schemes (``ZScoreNormalization``, ``RescaleTo01Normalization``)
are computed per patch, because the engine never holds the whole image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .model import NnUNetModel, network_logits

logger = logging.getLogger(__name__)

#: nnU-Net normalisation schemes whose result does not depend on the rest of the image.
FIXED_SCHEMES = ("CTNormalization", "NoNormalization", "RGBTo01Normalization")


def configuration_of(model: NnUNetModel) -> dict[str, Any]:
    """The plans' configuration of ``model`` with ``inherits_from`` resolved."""
    configs = model.plans.get("configurations", {})
    config = dict(configs.get(model.configuration, {}))
    seen = {model.configuration}
    while "inherits_from" in config and config["inherits_from"] not in seen:
        parent = config.pop("inherits_from")
        seen.add(parent)
        config = {**configs.get(parent, {}), **config}
    return config


class NnUNetTileModel:
    """An nnU-Net model folder as a :class:`~unified_framework.inference.SegmentationModel`.

    Parameters
    ----------
    model : NnUNetModel or path-like
        A result folder, or one made by ``mdlma nnunet import``.
    spatial_dims : int
        For ``2d`` models: 2 (images) or 3 (volumes, slice by slice along ``z``).
        3D configurations always take 3D volumes (a 2D image is refused by the engine's
        dimensionality check).
    patch_size : sequence of int, optional
        Default: the plans' patch size (and 16 slices along ``z`` for a 2d model on a volume).
    device : str, optional
    mirroring : bool
        nnU-Net's test-time mirroring along the axes its trainer allowed.

    Raises
    ------
    InputError
        Not an nnU-Net model, a cascade stage (it needs the low-resolution stage's
        labels as input), or ``spatial_dims`` other than 2 or 3.

    Examples
    --------
    >>> from unified_framework.inference import load_model
    >>> net = load_model("models/phantom-2d", spatial_dims=3)        # doctest: +SKIP
    >>> net.predict(np.zeros((1, 1, 16, 64, 64), np.float32)).shape  # doctest: +SKIP
    (1, 4, 16, 64, 64)
    """

    def __init__(
        self,
        model: NnUNetModel | str | Path,
        spatial_dims: int = 2,
        patch_size: Sequence[int] | None = None,
        device: Any = "cpu",
        mirroring: bool = False,
    ) -> None:
        if not isinstance(model, NnUNetModel):
            model = NnUNetModel.load(model)
        if spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims {spatial_dims}: expected 2 or 3")
        config = configuration_of(model)
        if config.get("previous_stage"):
            raise InputError(
                f"{model.folder}: a cascade stage ({model.configuration}) needs the labels of "
                f"{config['previous_stage']} as input; predict it with mdlma nnunet predict"
            )
        self.nnunet = model
        self.device = device
        self.mirroring = mirroring
        self.class_names = list(model.class_names)
        self.in_channels = model.in_channels
        self.num_classes = model.num_classes
        self.slices = model.is_2d and spatial_dims == 3
        self.spatial_dims = 3 if self.slices or not model.is_2d else 2
        arch = config.get("architecture", {}).get("arch_kwargs", {})
        net_dims = len(model.spacing_mm) or 2
        stride = [1] * net_dims
        for s in arch.get("strides") or []:
            s = s if isinstance(s, (list, tuple)) else [s] * net_dims
            stride = [a * int(b) for a, b in zip(stride, s)]
        plans_patch = [int(p) for p in config.get("patch_size") or [64] * net_dims]
        if self.slices:
            self.divisor = (1, *stride)
            default = (16, *plans_patch)
        else:
            self.divisor = tuple(stride)
            default = tuple(plans_patch)
        self.patch_size = tuple(int(p) for p in (patch_size or default))
        features = arch.get("features_per_stage") or [32]
        shrink = 2**net_dims  # each stage has 1/4 (2D) or 1/8 (3D) of the pixels
        # ~6 float32 tensors per stage kept at once (convolutions, norms, skips, decoder)
        self.bytes_per_pixel = int(4 * 6 * sum(f / shrink**i for i, f in enumerate(features))) + 1
        schemes = list(config.get("normalization_schemes") or [])
        self.per_patch_schemes = sorted({s for s in schemes if s not in FIXED_SCHEMES})
        if self.per_patch_schemes:
            logger.warning(
                "%s: normalisation %s depends on the whole image; the tiled engine applies it per patch",
                model.folder,
                ", ".join(self.per_patch_schemes),
            )
        self._predictor: Any = None
        self._normalizers: list[Any] = []
        self._use_mask: list[bool] = []

    def _prepare(self) -> Any:
        """nnU-Net's predictor (network, folds) and normalisers, once per process."""
        if self._predictor is None:
            predictor = self.nnunet.predictor(self.device, self.mirroring)
            manager = predictor.configuration_manager
            properties = predictor.plans_manager.foreground_intensity_properties_per_channel
            normalizers, use_mask = [], []
            for c in range(self.in_channels):
                scheme = manager.normalization_schemes[c]
                normalizers.append(
                    _scheme_class(scheme)(
                        use_mask_for_norm=manager.use_mask_for_norm[c],
                        intensityproperties=properties[str(c)],
                    )
                )
                use_mask.append(bool(manager.use_mask_for_norm[c]))
            self._normalizers, self._use_mask = normalizers, use_mask
            predictor.network.to(predictor.device).eval()
            self._predictor = predictor
        return self._predictor

    def normalize(self, patch: np.ndarray) -> np.ndarray:
        """nnU-Net's normalisation of one raw patch ``(channels, *spatial)`` (float32, in place)."""
        from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask

        self._prepare()
        seg = None
        if any(self._use_mask):  # nnU-Net normalises inside the non-zero region only
            seg = np.where(create_nonzero_mask(patch), np.int8(0), np.int8(-1))
        for c, normalizer in enumerate(self._normalizers):
            patch[c] = normalizer.run(patch[c], seg if self._use_mask[c] else None)
        return patch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32 of raw patches ``(n, channels, *patch)``.

        Each patch is normalised on its own, so a tile's result does not depend on which
        tiles share its batch (the engine's output is the same for any number of workers).
        """
        import torch

        predictor = self._prepare()
        data = np.array(batch, dtype=np.float32, copy=True)  # normalised in place
        for patch in data:
            self.normalize(patch)
        n = data.shape[0]
        if self.slices:  # (n, c, z, y, x) -> slices (n*z, c, y, x)
            _, c, z, y, x = data.shape
            data = data.transpose(0, 2, 1, 3, 4).reshape(n * z, c, y, x)
        with torch.inference_mode():
            logits = network_logits(predictor, torch.from_numpy(np.ascontiguousarray(data)))
            probs = torch.softmax(logits, dim=1).numpy()
        if self.slices:
            probs = probs.reshape(n, z, self.num_classes, y, x).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(probs, dtype=np.float32)

    def __repr__(self) -> str:
        kind = "2d slice by slice" if self.slices else self.nnunet.configuration
        return f"NnUNetTileModel({self.nnunet.folder}, {kind}, patch {self.patch_size}, pixels {math.prod(self.patch_size)})"


def _scheme_class(name: str) -> Any:
    """nnU-Net's normalisation class ``name``, found the way its preprocessor finds it."""
    from os.path import join

    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(
        join(nnunetv2.__path__[0], "preprocessing", "normalization"),
        name,
        "nnunetv2.preprocessing.normalization",
    )
    if found is None:
        raise InputError(f"normalisation scheme {name!r}: not one of nnU-Net's")
    return found
