"""A trained nnU-Net v2 model: load, predict volumes, and run its 2d network along SUN's axes.

Everything model-specific is nnU-Net's own code: the network comes from the trainer's
``build_network_architecture`` via :class:`nnunetv2.inference.predict_from_raw_data.nnUNetPredictor`,
intensities are normalised by nnU-Net's preprocessor, slices and volumes go through its
sliding-window inference (Gaussian weighting, mirroring when asked, all chosen folds
averaged).

nnU-Net prints progress to stdout; library code here does not print, so its output
is sent to this module's logger at DEBUG level.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..sun.slice_model import (
    BatchSlicePredictor,
    check_channels_and_dtype,
    is_nnunet_folder,
)
from ..utils.atomic import atomic_path

if TYPE_CHECKING:
    from ..sun.inference.budget import MemoryBudget


logger = logging.getLogger(__name__)

#: Written by ``mdlma nnunet import`` next to nnU-Net's files.
IMPORT_RECORD = "mdlma_model.json"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send nnU-Net's prints to the logger (DEBUG) instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                logger.debug("nnU-Net: %s", line)


def _folds(folder: Path, checkpoint: str) -> list[str]:
    return sorted(
        p.name[len("fold_") :]
        for p in folder.glob("fold_*")
        if (p / checkpoint).is_file() and p.is_dir()
    )


@dataclass
class NnUNetModel:
    """A trained nnU-Net model folder (``<trainer>__<plans>__<configuration>``).

    Attributes
    ----------
    folder : pathlib.Path
    configuration : str
        ``2d``, ``3d_fullres`` ...
    folds : list of str
        The folds used (their predictions are averaged).
    checkpoint : str
    class_names : list of str
        In label order ``0 .. n-1``.
    channel_names : list of str
    spacing_mm : tuple of float
        The configuration's target spacing (nnU-Net's units: those of the NIfTI headers, mm).
    trainer : str
    """

    folder: Path
    configuration: str
    folds: list[str]
    checkpoint: str
    class_names: list[str]
    channel_names: list[str]
    spacing_mm: tuple[float, ...]
    trainer: str
    dataset_json: dict = field(repr=False, default_factory=dict)
    plans: dict = field(repr=False, default_factory=dict)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        folds: Sequence[str | int] | None = None,
        checkpoint: str = "checkpoint_final.pth",
    ) -> NnUNetModel:
        """Open and check a result folder (nothing of the weights is loaded yet).

        Raises
        ------
        InputError
            Not an nnU-Net result folder, no trained fold, a region-based model (its
            outputs are not class probabilities).
        """
        folder = Path(folder)
        if not is_nnunet_folder(folder):
            raise InputError(
                f"{folder}: not an nnU-Net result folder (expected plans.json, dataset.json and fold_X/{checkpoint})"
            )
        try:
            dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
            plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
            labels = dataset_json["labels"]
            channels = dataset_json.get("channel_names") or dataset_json["modality"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"{folder}: dataset.json or plans.json unreadable ({type(exc).__name__}: {exc})"
            ) from None
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise InputError(
                f"{folder}: a region-based nnU-Net model (overlapping label regions); only class-label models are supported"
            )
        available = _folds(folder, checkpoint)
        chosen = [str(f) for f in folds] if folds else available
        missing = [f for f in chosen if f not in available]
        if not chosen or missing:
            raise InputError(
                f"{folder}: no fold_{(missing or ['X'])[0]}/{checkpoint}; trained folds: {', '.join(available) or 'none'}"
            )
        record_file = folder / IMPORT_RECORD
        record = (
            json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
        )
        configuration = record.get("configuration") or folder.name.split("__")[-1]
        trainer = record.get("trainer") or folder.name.split("__")[0]
        config = plans.get("configurations", {}).get(configuration)
        if config is None:
            raise InputError(
                f"{folder}: configuration {configuration!r} is not in plans.json "
                f"({', '.join(plans.get('configurations', {}))})"
            )
        while "spacing" not in config and "inherits_from" in config:
            config = {**plans["configurations"][config["inherits_from"]], **config}
        by_value = sorted(labels.items(), key=lambda item: int(item[1]))
        return cls(
            folder=folder,
            configuration=configuration,
            folds=chosen,
            checkpoint=checkpoint,
            class_names=[name for name, _ in by_value],
            channel_names=[channels[k] for k in sorted(channels, key=int)],
            spacing_mm=tuple(float(s) for s in config.get("spacing", ())),
            trainer=trainer,
            dataset_json=dataset_json,
            plans=plans,
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (background included)."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Number of input channels."""
        return len(self.channel_names)

    @property
    def is_2d(self) -> bool:
        """A 2d configuration (can run along SUN's axes)."""
        return len(self.spacing_mm) == 2

    def predictor(self, device: Any = None, mirroring: bool = False) -> Any:
        """An initialised :class:`nnunetv2.inference.predict_from_raw_data.nnUNetPredictor`.

        Parameters
        ----------
        device : str, optional
            ``cuda``/``cpu``; default a GPU if present.
        mirroring : bool
            nnU-Net's test-time mirroring (2x per mirrored axis: 4x for 2d, 8x for 3d).
        """
        import torch

        from ..utils.device import resolve_device
        from .paths import TRAINERS_DIR

        device = resolve_device(device)
        # nnU-Net looks up the trainer class by name; ours lives in TRAINERS_DIR.
        import os

        os.environ.setdefault("nnUNet_extTrainer", str(TRAINERS_DIR))
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        with quiet():
            predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=mirroring,
                perform_everything_on_device=device.type == "cuda",
                device=torch.device(device),
                verbose=False,
                allow_tqdm=False,
            )
            try:
                predictor.initialize_from_trained_model_folder(
                    str(self.folder),
                    [f if f == "all" else int(f) for f in self.folds],
                    self.checkpoint,
                )
            except (RuntimeError, KeyError, OSError) as exc:
                raise InputError(
                    f"{self.folder}: cannot load the nnU-Net model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                ) from None
        return predictor


def predict_array(
    model: NnUNetModel,
    image: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    device: Any = None,
    mirroring: bool = False,
    probabilities: bool = False,
    predictor: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """nnU-Net's own prediction of a whole volume in memory (any configuration).

    Parameters
    ----------
    image : numpy.ndarray
        ``(z, y, x)`` or ``(channels, z, y, x)``.
    spacing_mm : sequence of 3 float
        Voxel size in nnU-Net's units (mm when the data came through NIfTI).

    Returns
    -------
    labels : numpy.ndarray of uint8
    probabilities : numpy.ndarray of float16 ``(classes, z, y, x)`` or None
    """
    data = np.asarray(image)
    if data.ndim == 3:
        data = data[None]
    check_channels_and_dtype(data.shape, data.dtype, "volume", model.in_channels)
    predictor = predictor or model.predictor(device, mirroring)
    with quiet():
        result = predictor.predict_single_npy_array(
            data.astype(np.float32),
            {"spacing": [float(s) for s in spacing_mm]},
            None,
            None,
            probabilities,
        )
    if probabilities:
        labels, probs = result
        return np.asarray(labels, np.uint8), np.asarray(probs, np.float16)
    return np.asarray(result, np.uint8), None


class NnUNetSliceModel:
    """A trained nnU-Net ``2d`` model with SUN's :class:`~unified_framework.sun.slice_model.SliceModel` interface.

    Each batch of slices (from any of SUN's nine axes) is normalised by nnU-Net's
    preprocessor and predicted by nnU-Net's sliding window (patch size, Gaussian
    weighting, folds averaged); the softmax probabilities go to SUN's accumulator.
    Slices are not resampled to the model's spacing: the volume should have the
    training voxel size (a different one logs a warning, as for SUN models).
    """

    def __init__(
        self, model: NnUNetModel, mirroring: bool = False, sliding_window: bool = False
    ) -> None:
        if not model.is_2d:
            raise InputError(
                f"{model.folder}: a {model.configuration} nnU-Net model; only 2d models run along SUN's axes "
                "(predict it with mdlma nnunet predict)"
            )
        self.nnunet = model
        self.mirroring = mirroring
        self.sliding_window = sliding_window
        self.class_names = list(model.class_names)
        original = model.plans.get("original_median_spacing_after_transp") or [
            model.spacing_mm[0],
            *model.spacing_mm,
        ]
        self.voxel_size = tuple(float(s) * 1000.0 for s in original)  # mm -> micrometres
        self.axes: tuple[str, ...] = ("z", "y", "x")
        self.input_dtype = "float32"
        self._predictor: Any = None

    @classmethod
    def load(cls, folder: str | Path, **kwargs: Any) -> NnUNetSliceModel:
        """Open a 2d result folder (``folds``, ``checkpoint``, ``mirroring``, ``sliding_window`` as keywords)."""
        mirroring = bool(kwargs.pop("mirroring", False))
        sliding = bool(kwargs.pop("sliding_window", False))
        return cls(NnUNetModel.load(folder, **kwargs), mirroring, sliding)

    @property
    def num_classes(self) -> int:
        """Classes."""
        return self.nnunet.num_classes

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self.nnunet.in_channels

    @property
    def bytes_per_pixel(self) -> int:
        """Rough activation memory per input pixel of nnU-Net's 2d U-Net (float32)."""
        arch = self.nnunet.plans["configurations"][self.nnunet.configuration].get(
            "architecture", {}
        )
        features = arch.get("arch_kwargs", {}).get("features_per_stage") or [32]
        return int(4 * 6 * sum(f / 4**i for i, f in enumerate(features))) + 1

    def check_volume(self, shape: Sequence[int], dtype: Any, name: str) -> None:
        """Refuse a volume of another channel count or a non-numeric dtype."""
        check_channels_and_dtype(shape, dtype, name, self.in_channels)

    def slice_predictor(
        self, device: Any = None, memory_budget: int | MemoryBudget | None = None
    ) -> Any:
        """Batches for SUN's predictor."""
        from ..sun.inference.budget import DEFAULT_MEMORY_BUDGET

        self._predictor = self.nnunet.predictor(device, self.mirroring)
        return BatchSlicePredictor(self, memory_budget or DEFAULT_MEMORY_BUDGET)

    @property
    def divisor(self) -> tuple[int, int]:
        """The network's total stride per slice axis (whole slices are padded to it)."""
        arch = self.nnunet.plans["configurations"][self.nnunet.configuration].get(
            "architecture", {}
        )
        strides = arch.get("arch_kwargs", {}).get("strides") or [[1, 1]]
        total = [1, 1]
        for stride in strides:
            stride = stride if isinstance(stride, (list, tuple)) else [stride, stride]
            total = [t * int(s) for t, s in zip(total, stride)]
        return total[0], total[1]

    def predict_slices(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(k, classes, rows, cols)`` of raw slices ``(k, channels, rows, cols)``.

        Intensities are normalised by nnU-Net's preprocessor. With ``sliding_window``
        the slices go through nnU-Net's own 2d inference (patch by patch, one patch per
        network call, Gaussian weighting); otherwise (default) whole slices, padded to
        the network's stride, go through the network in batches (nnU-Net's
        ``_internal_maybe_mirror_and_predict``, so mirroring and fold averaging are
        nnU-Net's), which is many times faster on CPUs and the same where a slice is no
        larger than the patch.
        """
        import torch
        import torch.nn.functional as F
        from nnunetv2.preprocessing.preprocessors.default_preprocessor import (
            DefaultPreprocessor,
        )

        if self._predictor is None:
            self._predictor = self.nnunet.predictor(None, self.mirroring)
        predictor = self._predictor
        # nnU-Net's 2d inference takes (channels, slices, rows, cols) and runs slice by slice.
        data = np.array(
            images.transpose(1, 0, 2, 3), dtype=np.float32, order="C"
        )  # a copy: normalised in place
        mask = np.zeros((1, *data.shape[1:]), np.int8)
        with quiet():
            data = DefaultPreprocessor(verbose=False)._normalize(
                data,
                mask,
                predictor.configuration_manager,
                predictor.plans_manager.foreground_intensity_properties_per_channel,
            )
            if self.sliding_window:
                logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data))
                logits = logits.float().permute(1, 0, 2, 3)
            else:
                k, rows, cols = data.shape[1:]
                dr, dc = self.divisor
                x = torch.from_numpy(np.ascontiguousarray(data.transpose(1, 0, 2, 3)))
                x = F.pad(x, (0, -cols % dc, 0, -rows % dr))  # zeros, as nnU-Net pads
                logits = network_logits(predictor, x)[:, :, :rows, :cols]
            probabilities = torch.softmax(logits, dim=1)
        return np.asarray(probabilities.numpy(), np.float32)


def network_logits(predictor: Any, x: Any) -> Any:
    """Logits of the network on preprocessed inputs ``(n, channels, *spatial)``, folds averaged.

    nnU-Net's ``_internal_maybe_mirror_and_predict`` runs each fold's weights (with
    test-time mirroring when the predictor has it on); the mean comes back on the CPU as
    float32 ``(n, classes, *spatial)``.
    """
    import torch

    network = predictor.network.to(predictor.device).eval()
    x = x.to(predictor.device)
    folds = predictor.list_of_parameters
    logits = None
    with torch.inference_mode():
        for params in folds:
            if len(folds) > 1:
                network.load_state_dict(params)
            out = predictor._internal_maybe_mirror_and_predict(x).float()
            logits = out if logits is None else logits + out
    assert logits is not None
    return logits.cpu() / len(folds)


def import_model(
    folder: str | Path,
    out: str | Path,
    folds: Sequence[str | int] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    name: str | None = None,
) -> Path:
    """Copy a trained nnU-Net result folder's model into a self-contained model folder.

    The copy holds ``dataset.json``, ``plans.json``, the chosen folds' checkpoint and an
    ``mdlma_model.json`` record (configuration, trainer, class names, source); it is
    still an nnU-Net result folder (``nnUNetv2_predict_from_modelfolder`` reads it) and
    is what ``mdlma nnunet predict``, ``mdlma sun predict`` (2d) and ``mdlma compare``
    take as ``--model``.

    Raises
    ------
    InputError
        ``folder`` is not an nnU-Net result, or ``out`` exists.

    Examples
    --------
    >>> import_model("nnUNet_results/Dataset501_X/nnUNetTrainer__nnUNetPlans__2d", "models/x-2d")  # doctest: +SKIP
    """
    model = NnUNetModel.load(folder, folds, checkpoint)
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: exists already; choose a new model folder")
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for item in ("dataset.json", "plans.json"):
            shutil.copy2(model.folder / item, tmp / item)
        for fold in model.folds:
            (tmp / f"fold_{fold}").mkdir()
            shutil.copy2(
                model.folder / f"fold_{fold}" / checkpoint, tmp / f"fold_{fold}" / checkpoint
            )
            extra = model.folder / f"fold_{fold}" / "mdlma_training.json"
            if extra.is_file():
                shutil.copy2(extra, tmp / f"fold_{fold}" / extra.name)
        record = {
            "format": "mdlma-nnunet-model",
            "name": name or out.name,
            "configuration": model.configuration,
            "trainer": model.trainer,
            "folds": model.folds,
            "checkpoint": checkpoint,
            "class_names": model.class_names,
            "channel_names": model.channel_names,
            "spacing_mm": list(model.spacing_mm),
            "source": str(model.folder.resolve()),
        }
        (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return out
