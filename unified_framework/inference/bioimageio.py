"""Standard model packages: every model kind to and from the bioimage.io model format (spec 0.5).

An exported package is a folder (or ``.zip``) with ``rdf.yaml``, the network's weights
(TorchScript of SUN's U-Net, the active-learning HRNet/U-Net and nnU-Net's network with
its folds averaged; the Keras v3 file of Keras models), a test input and its expected
output (computed by this framework's own adapter), a README, and the intensity
normalisation and softmax as the format's own pre- and post-processing steps, so ilastik,
deepImageJ, QuPath and ``bioimageio.core`` apply the model without this framework.
Per-channel clipping to ``[low, high]`` followed by ``(v - mean) / std`` (SUN's
normalisation, nnU-Net's ``CTNormalization``) is written exactly as three standard steps:
``scale_linear`` to ``(v - low) / (high - low)`` per channel, ``clip`` to ``[0, 1]``,
``scale_linear`` to the normalised value; nnU-Net's ``ZScoreNormalization`` is
``zero_mean_unit_variance`` per sample. :func:`export_model` gathers what each kind
contributes (an ``_Export``) and ``_write_package`` writes every package. Everything works
offline: validation uses the library's own checks (:func:`bioimageio.core.test_model`),
which run the test input through the package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path

logger = logging.getLogger(__name__)

UNET_DOI = "10.1007/978-3-319-24574-4_28"
HRNET_DOI = "10.1109/TPAMI.2020.2983686"
NNUNET_DOI = "10.1038/s41592-020-01008-z"


def _offline() -> None:
    """Nothing may download (bioimage.io's settings read this variable); pydantic shim."""
    os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "0")
    _patch_serializer()


def _patch_serializer() -> None:
    """Make bioimageio.spec 0.5.12 work with pydantic >= 2.12 (compatibility shim).

    Two of its wrap serializers (``package_file_descr_serializer``,
    ``package_weights``) call pydantic's handler as ``handler(value, info)``; newer
    pydantic takes the second argument as an index key and fails on every model
    description with files. Their source is recompiled calling ``handler(value)``, as
    pydantic documents, and the code swapped in place, so that the references captured
    at import time (type annotations) use it too. A no-op once the library is fixed.
    """
    import inspect
    import re
    import textwrap

    from bioimageio.spec._internal import io_packaging
    from bioimageio.spec.model import v0_4

    for module, name in (
        (io_packaging, "package_file_descr_serializer"),
        (v0_4, "package_weights"),
    ):
        function = getattr(module, name)
        if getattr(function, "_mdlma_patched", False):
            continue
        source = textwrap.dedent(inspect.getsource(function))
        fixed = re.sub(r"handler\(\s*value,\s*info,[^\n]*\n\s*\)", "handler(value)", source)
        if fixed != source:
            namespace = dict(vars(module))
            exec(compile(fixed, inspect.getsourcefile(function) or name, "exec"), namespace)  # noqa: S102
            function.__code__ = namespace[name].__code__
        function._mdlma_patched = True


@dataclass
class _Export:
    """What one export writes: everything model-specific; :func:`_write_package` does the rest."""

    name: str
    description: str
    readme: str
    tags: list[str]
    spatial_dims: int  # of the exported network: 2 (b, c, y, x) or 3 (b, c, z, y, x)
    class_names: list[str]
    size_min: tuple[int, ...]  # per spatial axis: valid sides are min + k * step
    size_step: tuple[int, ...]
    preprocessing: list[Any]  # bioimage.io steps after ensure_dtype float32
    test_input: np.ndarray  # (1, c, *spatial)
    test_output: np.ndarray  # (1, classes, *spatial): the native adapter's probabilities
    save_weights: Callable[[Path], Any]  # writes the weights into the folder; the WeightsDescr
    config: dict[str, Any]
    softmax: bool = True  # the network returns logits
    channels_last: bool = False  # Keras' (b, *spatial, c) tensors
    cite: list[tuple[str, str]] = field(default_factory=lambda: [])


def export_model(
    model_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str = "MIT",
    test_size: int | None = None,
) -> Path:
    """Export any trained model of the module to a bioimage.io model package (folder or ``.zip``).

    Known kinds: SUN model packages and active-learning HRNet/U-Net files (``.pt``,
    TorchScript weights), imported or trained nnU-Net model folders (``2d`` as a 2D model,
    ``3d_fullres``/``3d_lowres`` as a 3D model; TorchScript of the network nnU-Net builds
    from the plans, the chosen folds' logits averaged inside it) and Keras ``.keras`` files
    (Keras v3 weights). The normalisation becomes the format's pre-processing, the softmax
    its post-processing; the test output is what this framework's own adapter computes for
    the test input, so :func:`validate_package` proves the package predicts like it.

    Parameters
    ----------
    model_path : path-like
        A model file or folder (:func:`unified_framework.inference.model_kind`).
    out : path-like
        A folder (created; must not exist) or a ``.zip`` file.
    name : str, optional
        Model name (default from the file name).
    authors : list of str, optional
    license : str
        SPDX license id of the weights.
    test_size : int, optional
        Side of the test input (default: the model's training patch or input size).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    InputError
        An unknown kind, a bioimage.io package (already one), or a normalisation the
        format cannot express (one line naming it).

    Examples
    --------
    >>> export_model("models/phantom-2d", "phantom.bioimageio.zip")  # doctest: +SKIP
    """
    _offline()  # before bioimageio.spec is first imported: its settings read the environment
    from .model import model_kind

    model_path, out = Path(model_path), Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    if not model_path.exists():
        raise InputError(f"{model_path}: no such model file or folder")
    kind = model_kind(model_path) or ""
    label = name or (model_path.stem if model_path.is_file() else model_path.name)
    if kind.startswith("nnU-Net"):
        spec = _nnunet_export(model_path, label, test_size)
    elif kind.startswith("Keras"):
        spec = _keras_export(model_path, label, test_size)
    elif kind.startswith("active-learning"):
        spec = _al_export(model_path, label, test_size)
    elif kind.startswith("SUN"):
        spec = _sun_export(model_path, label, test_size)
    elif kind.startswith("bioimage.io"):
        raise InputError(
            f"{model_path}: already a bioimage.io package; use mdlma model validate or import"
        )
    else:
        raise InputError(
            f"{model_path}: cannot export this kind of model; expected a SUN or active-learning "
            ".pt, an nnU-Net model folder or a Keras .keras file"
        )
    return _write_package(spec, out, authors or ["MDLMA unified framework"], license)


def export_sun(model_path: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Export a SUN model package (``.pt``); :func:`export_model` with the same arguments.

    Examples
    --------
    >>> export_sun("model.pt", "model.bioimageio.zip")  # doctest: +SKIP
    """
    from ..sun.model_package import load_model

    load_model(model_path)  # a one-line error for anything but a SUN model
    return export_model(model_path, out, **kwargs)


def _test_input(shape: tuple[int, ...], lo: Any = None, hi: Any = None) -> np.ndarray:
    """A seeded test image ``(1, c, *spatial)``: 8-bit values, or 10 % beyond a clip range ``[lo, hi]``.

    Values outside the clip range make the test exercise the clipping.
    """
    channels = shape[0]
    clipped = lo is not None and hi is not None
    lo = np.asarray(lo, float) if clipped else np.zeros(channels)
    hi = np.asarray(hi, float) if clipped else np.full(channels, 255.0)
    margin = 0.1 * (hi - lo) if clipped else np.zeros(channels)
    rng = np.random.default_rng(0)
    data = rng.uniform(lo - margin, hi + margin, size=(*shape[1:], channels))
    return np.moveaxis(data, -1, 0)[None].astype(np.float32)


def _clip_standardise(low: Any, high: Any, mean: Any, std: Any) -> list[Any]:
    """Per-channel clip to ``[low, high]`` then ``(v - mean) / std`` as three standard steps."""
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        ClipDescr,
        ClipKwargs,
        ScaleLinearAlongAxisKwargs,
        ScaleLinearDescr,
    )

    lo, hi = np.asarray(low, float), np.asarray(high, float)
    mean, std = np.asarray(mean, float), np.maximum(np.asarray(std, float), 1e-8)
    span = np.maximum(hi - lo, 1e-12)
    axis = AxisId("channel")
    return [
        ScaleLinearDescr(
            kwargs=ScaleLinearAlongAxisKwargs(
                axis=axis,
                gain=[float(g) for g in 1.0 / span],
                offset=[float(o) for o in -lo / span],
            )
        ),
        ClipDescr(kwargs=ClipKwargs(min=0.0, max=1.0)),
        ScaleLinearDescr(
            kwargs=ScaleLinearAlongAxisKwargs(
                axis=axis,
                gain=[float(g) for g in span / std],
                offset=[float(o) for o in (lo - mean) / std],
            )
        ),
    ]


def _standardise(mean: Any, std: Any) -> list[Any]:
    """Per-channel ``(v - mean) / std`` as one ``scale_linear`` step."""
    from bioimageio.spec.model.v0_5 import AxisId, ScaleLinearAlongAxisKwargs, ScaleLinearDescr

    mean, std = np.asarray(mean, float), np.asarray(std, float)
    return [
        ScaleLinearDescr(
            kwargs=ScaleLinearAlongAxisKwargs(
                axis=AxisId("channel"),
                gain=[float(g) for g in 1.0 / std],
                offset=[float(o) for o in -mean / std],
            )
        )
    ]


def _torchscript(network: Any, example: np.ndarray) -> Callable[[Path], Any]:
    """A weights writer tracing ``network`` (logits) on ``example``."""

    def save(root: Path) -> Any:
        import torch
        from bioimageio.spec.model.v0_5 import TorchscriptWeightsDescr, Version, WeightsDescr

        with torch.no_grad():
            scripted = torch.jit.trace(network.eval(), torch.from_numpy(example), check_trace=False)
        scripted.save(str(root / "weights.torchscript.pt"))
        return WeightsDescr(
            torchscript=TorchscriptWeightsDescr(
                source=root / "weights.torchscript.pt",
                pytorch_version=Version(torch.__version__.split("+")[0]),
            )
        )

    return save


def _sun_export(path: Path, name: str, test_size: int | None) -> _Export:
    from ..sun.model_package import load_model
    from ..sun.networks import fold_batch_norm
    from .model import SunUNet

    sun = load_model(path)
    config, norm = sun.config, sun.normalization
    side = test_size or config.input_size
    if side % config.divisor:
        raise InputError(f"test size {side}: expected a multiple of {config.divisor}")
    test_input = _test_input((config.in_channels, side, side), norm.low, norm.high)
    return _Export(
        name=name,
        description="SUN 2D U-Net segmentation (MDLMA unified framework)",
        readme=f"A SUN 2D U-Net (depth {config.depth}, width {config.base_width}) exported by the "
        f"MDLMA unified framework. Classes: {', '.join(sun.class_names)}.\nInput: "
        f"{config.in_channels} channel(s), sides multiples of {config.divisor}; trained voxel size "
        f"{', '.join(f'{v:g}' for v in sun.voxel_size)} um.\n",
        tags=["segmentation", "unet", "2d", "mdlma"],
        spatial_dims=2,
        class_names=list(sun.class_names),
        size_min=(config.divisor,) * 2,
        size_step=(config.divisor,) * 2,
        preprocessing=_clip_standardise(norm.low, norm.high, norm.mean, norm.std),
        test_input=test_input,
        test_output=SunUNet(sun).predict(test_input),
        save_weights=_torchscript(fold_batch_norm(sun.network("cpu")), test_input),
        config={
            "format": "sun",
            "voxel_size": list(sun.voxel_size),
            "class_names": list(sun.class_names),
            "patch_size": [side, side],
        },
        cite=[("Ronneberger et al., U-Net (MICCAI 2015)", UNET_DOI)],
    )


def _al_export(path: Path, name: str, test_size: int | None) -> _Export:
    from ..active_learning.model import load_al_model
    from ..networks.hrnet import STRIDE
    from .model import _load_al

    al = load_al_model(path)
    norm = al.normalization
    # HRNet pads inputs to multiples of its stride inside forward; the trace keeps one
    # branch, so the package takes sides that need no padding.
    step = STRIDE if al.kind == "hrnet" else al.divisor
    side = test_size or int(getattr(al.config, "input_size", 64))
    if side % step:
        raise InputError(f"test size {side}: expected a multiple of {step}")
    test_input = _test_input((len(norm.mean), side, side), norm.low, norm.high)
    family = "HRNet" if al.kind == "hrnet" else "U-Net"
    cite = (
        [("Wang et al., HRNet (TPAMI 2020)", HRNET_DOI)]
        if al.kind == "hrnet"
        else [("Ronneberger et al., U-Net (MICCAI 2015)", UNET_DOI)]
    )
    return _Export(
        name=name,
        description=f"Active-learning 2D {family} segmentation (MDLMA unified framework)",
        readme=f"A 2D {family} trained by active learning (mdlma al), exported by the MDLMA "
        f"unified framework. Classes: {', '.join(al.class_names)}.\nInput: {len(norm.mean)} "
        f"channel(s), sides multiples of {step}.\n",
        tags=["segmentation", al.kind, "2d", "active-learning", "mdlma"],
        spatial_dims=2,
        class_names=list(al.class_names),
        size_min=(step, step),
        size_step=(step, step),
        preprocessing=_clip_standardise(norm.low, norm.high, norm.mean, norm.std),
        test_input=test_input,
        test_output=_load_al(path).predict(test_input),
        save_weights=_torchscript(al.network(), test_input),
        config={
            "format": "mdlma-al-model",
            "network": al.kind,
            "class_names": list(al.class_names),
            "patch_size": [side, side],
        },
        cite=cite,
    )


class _FoldMean:
    """Builds a module averaging the logits of nnU-Net folds (one network per fold)."""

    @staticmethod
    def build(network: Any, folds: list[Any]) -> Any:
        import copy

        import torch

        class FoldMean(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.folds = torch.nn.ModuleList()
                for params in folds:
                    net = copy.deepcopy(network)
                    net.load_state_dict(params)
                    self.folds.append(net.eval())

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                total = self.folds[0](x)
                for net in self.folds[1:]:
                    total = total + net(x)
                return total / len(self.folds)

        if len(folds) == 1:
            network.load_state_dict(folds[0])
            return network.eval()
        return FoldMean().eval()


def _nnunet_preprocessing(
    folder: Path, schemes: list[str], use_mask: list[bool], props: dict, dims: int
) -> tuple[list[Any], Any, Any]:
    """bioimage.io steps for nnU-Net's per-channel schemes; the test input's range.

    ``CTNormalization`` (clip to the 0.5/99.5 foreground percentiles, then ``(v - mean)
    / std`` with the dataset's foreground statistics) is written like SUN's;
    ``ZScoreNormalization`` as ``zero_mean_unit_variance`` per sample and channel;
    ``RGBTo01Normalization`` as ``scale_linear`` by 1/255; ``NoNormalization`` as nothing. Anything else, masks, or schemes that differ between
    channels are refused (one line).
    """
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        ZeroMeanUnitVarianceDescr,
        ZeroMeanUnitVarianceKwargs,
    )

    kinds = set(schemes)
    if len(kinds) != 1:
        raise InputError(
            f"{folder}: channels use different normalisation schemes ({', '.join(schemes)}); "
            "a bioimage.io package applies one to all channels"
        )
    (scheme,) = kinds
    if any(use_mask) and scheme != "NoNormalization":
        raise InputError(
            f"{folder}: normalisation {scheme} inside the non-zero mask (use_mask_for_norm) "
            "has no bioimage.io equivalent"
        )
    if scheme == "CTNormalization":
        p = [props[str(c)] for c in range(len(schemes))]
        lo = [q["percentile_00_5"] for q in p]
        hi = [q["percentile_99_5"] for q in p]
        steps = _clip_standardise(lo, hi, [q["mean"] for q in p], [q["std"] for q in p])
        return steps, np.asarray(lo), np.asarray(hi)
    if scheme == "ZScoreNormalization":
        axes = [AxisId(a) for a in ("z", "y", "x")[-dims:]]
        zscore = ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(axes=axes, eps=1e-8))
        return [zscore], None, None
    if scheme == "NoNormalization":
        return [], None, None
    if scheme == "RGBTo01Normalization":  # v / 255 (nnU-Net asserts 8-bit input)
        c = len(schemes)
        return _standardise([0.0] * c, [255.0] * c), None, None
    raise InputError(
        f"{folder}: nnU-Net normalisation {scheme} has no bioimage.io equivalent; "
        "exportable: CTNormalization, ZScoreNormalization, NoNormalization, RGBTo01Normalization"
    )


def _nnunet_export(path: Path, name: str, test_size: int | None) -> _Export:
    from ..nnunet.model import NnUNetModel
    from ..nnunet.tiled import NnUNetTileModel, configuration_of

    nn = NnUNetModel.load(path)
    config = configuration_of(nn)
    adapter = NnUNetTileModel(nn, spatial_dims=2 if nn.is_2d else 3)
    dims = adapter.spatial_dims
    schemes = list(config.get("normalization_schemes") or ["NoNormalization"] * nn.in_channels)
    use_mask = [bool(u) for u in config.get("use_mask_for_norm") or [False] * len(schemes)]
    props = nn.plans.get("foreground_intensity_properties_per_channel", {})
    steps, lo, hi = _nnunet_preprocessing(path, schemes, use_mask, props, dims)
    step = tuple(int(d) for d in adapter.divisor)
    patch = [int(p) for p in adapter.patch_size]
    if test_size:
        if any(test_size % s for s in step):
            raise InputError(f"test size {test_size}: expected a multiple of {step}")
        patch = [test_size] * dims
    test_input = _test_input((nn.in_channels, *patch), lo, hi)
    test_output = adapter.predict(test_input)
    predictor = adapter._prepare()
    network = _FoldMean.build(predictor.network.cpu(), list(predictor.list_of_parameters))
    family = f"nnU-Net {nn.configuration}"
    return _Export(
        name=name,
        description=f"{family} segmentation (MDLMA unified framework)",
        readme=f"An {family} model (folds {', '.join(str(f) for f in nn.folds)}, their logits "
        f"averaged) exported by the MDLMA unified framework. Classes: {', '.join(nn.class_names)}."
        f"\nInput: {nn.in_channels} channel(s) normalised by {', '.join(sorted(set(schemes)))}; "
        f"sides multiples of {step}; training patch {patch}; voxel size (mm) "
        f"{', '.join(f'{v:g}' for v in nn.spacing_mm)}. Inputs are not resampled.\n",
        tags=["segmentation", "nnu-net", f"{dims}d", "mdlma"],
        spatial_dims=dims,
        class_names=list(nn.class_names),
        size_min=step,
        size_step=step,
        preprocessing=steps,
        test_input=test_input,
        test_output=test_output,
        save_weights=_torchscript(network, test_input),
        config={
            "format": "nnunet",
            "configuration": nn.configuration,
            "folds": [str(f) for f in nn.folds],
            "normalization_schemes": schemes,
            "spacing_mm": list(nn.spacing_mm),
            "class_names": list(nn.class_names),
            "patch_size": [int(p) for p in adapter.patch_size],
        },
        cite=[("Isensee et al., nnU-Net (Nature Methods 2021)", NNUNET_DOI)],
    )


def _keras_export(path: Path, name: str, test_size: int | None) -> _Export:
    import shutil

    from ..tf import import_tensorflow
    from .model import KerasModel

    tf = import_tensorflow()
    adapter = KerasModel(path)
    import keras

    dims = adapter.spatial_dims
    step = tuple(int(d) for d in adapter.divisor)
    patch = [test_size] * dims if test_size else [int(p) for p in adapter.patch_size]
    fixed = [int(d) for d in adapter.keras.input_shape[1:-1] if d]
    if fixed and fixed != patch:
        raise InputError(
            f"{path}: the network takes only {fixed} inputs; give that as the test size"
        )
    test_input = _test_input((adapter.in_channels, *patch))
    steps = (
        []
        if adapter.mean is None and adapter.std is None
        else _standardise(
            adapter.mean if adapter.mean is not None else np.zeros(adapter.in_channels),
            adapter.std if adapter.std is not None else np.ones(adapter.in_channels),
        )
    )

    def save(root: Path) -> Any:
        from bioimageio.spec.model.v0_5 import KerasV3WeightsDescr, Version, WeightsDescr

        shutil.copyfile(path, root / "weights.keras")
        return WeightsDescr(
            keras_v3=KerasV3WeightsDescr(
                source=root / "weights.keras",
                keras_version=Version(keras.__version__),
                backend=("tensorflow", Version(tf.__version__)),
            )
        )

    return _Export(
        name=name,
        description=f"Keras {dims}D segmentation network (MDLMA unified framework)",
        readme=f"A Keras {dims}D network exported by the MDLMA unified framework. Classes: "
        f"{', '.join(adapter.class_names)}.\nInput: {adapter.in_channels} channel(s), "
        f"channels last, sides multiples of {step}.\n",
        tags=["segmentation", "keras", f"{dims}d", "mdlma"],
        spatial_dims=dims,
        class_names=list(adapter.class_names),
        size_min=step if not fixed else tuple(fixed),
        size_step=step if not fixed else (0,) * dims,
        preprocessing=steps,
        test_input=test_input,
        test_output=adapter.predict(test_input),
        save_weights=save,
        config={
            "format": "keras",
            "class_names": list(adapter.class_names),
            "patch_size": patch,
        },
        softmax=bool(adapter.softmax),
        channels_last=True,
        cite=[("Chollet et al., Keras", "https://keras.io")],
    )


def _write_package(spec: _Export, out: Path, authors: list[str], license: str) -> Path:
    """Write ``spec`` as a bioimage.io model (spec 0.5): rdf.yaml, weights, test tensors, README."""
    _offline()
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.generic.v0_3 import Author
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        Doi,
        EnsureDtypeDescr,
        EnsureDtypeKwargs,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        ModelDescr,
        OutputTensorDescr,
        ParameterizedSize,
        SizeReference,
        SoftmaxDescr,
        SoftmaxKwargs,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
    )

    names = ("z", "y", "x")[-spec.spatial_dims :]
    channels = spec.test_input.shape[1]
    test_input, test_output = spec.test_input, spec.test_output
    if spec.channels_last:
        test_input, test_output = np.moveaxis(test_input, 1, -1), np.moveaxis(test_output, 1, -1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        weights = spec.save_weights(root)
        np.save(root / "test_input.npy", np.ascontiguousarray(test_input))
        np.save(root / "test_output.npy", np.ascontiguousarray(test_output))
        (root / "README.md").write_text(f"# {spec.name}\n\n{spec.readme}", encoding="utf-8")
        in_space = [
            SpaceInputAxis(
                id=AxisId(n),
                size=ParameterizedSize(min=lo, step=st) if st else lo,
            )
            for n, lo, st in zip(names, spec.size_min, spec.size_step)
        ]
        out_space = [
            SpaceOutputAxis(
                id=AxisId(n), size=SizeReference(tensor_id=TensorId("raw"), axis_id=AxisId(n))
            )
            for n in names
        ]
        in_channel = ChannelAxis(channel_names=[Identifier(f"channel{c}") for c in range(channels)])
        out_channel = ChannelAxis(
            channel_names=[Identifier(_identifier(n)) for n in spec.class_names]
        )
        in_axes: list[Any] = [BatchAxis(), in_channel, *in_space]
        out_axes: list[Any] = [BatchAxis(), out_channel, *out_space]
        if spec.channels_last:
            in_axes = [BatchAxis(), *in_space, in_channel]
            out_axes = [BatchAxis(), *out_space, out_channel]
        inputs = InputTensorDescr(
            id=TensorId("raw"),
            axes=in_axes,
            test_tensor=FileDescr(source=root / "test_input.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                EnsureDtypeDescr(kwargs=EnsureDtypeKwargs(dtype="float32")),
                *spec.preprocessing,
            ],
        )
        outputs = OutputTensorDescr(
            id=TensorId("probabilities"),
            axes=out_axes,
            test_tensor=FileDescr(source=root / "test_output.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            postprocessing=(
                [SoftmaxDescr(kwargs=SoftmaxKwargs(axis=AxisId("channel")))] if spec.softmax else []
            ),
        )
        descr = ModelDescr(
            name=_name(spec.name),
            description=spec.description,
            authors=[Author(name=a) for a in authors],
            cite=[
                CiteEntry(text=t, doi=Doi(d)) if d[:3] == "10." else CiteEntry(text=t, url=d)  # type: ignore[arg-type]
                for t, d in spec.cite
            ],
            license=license,  # type: ignore[arg-type]  # pydantic validates the SPDX id
            documentation=FileDescr(source=root / "README.md"),
            tags=spec.tags,
            inputs=[inputs],
            outputs=[outputs],
            weights=weights,
            config={"mdlma": spec.config},  # type: ignore[arg-type]  # pydantic builds the Config
        )
        with atomic_path(out) as tmp:
            if out.suffix == ".zip":
                save_bioimageio_package(descr, output_path=tmp)
            else:
                save_bioimageio_package_as_folder(descr, output_path=tmp)
    return out


def _name(text: str) -> str:
    """bioimage.io names need 5..128 characters."""
    text = text.strip() or "model"
    return text if len(text) >= 5 else f"model {text}"


def _identifier(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in text) or "class"
    return cleaned if cleaned[0].isalpha() else f"c_{cleaned}"


def _source(path: Path) -> Path:
    """The ``rdf.yaml`` of a folder, else the path itself (a YAML or a zip)."""
    if path.is_dir():
        for name in ("rdf.yaml", "bioimageio.yaml"):
            if (path / name).is_file():
                return path / name
        raise InputError(
            f"{path}: no rdf.yaml in this folder; expected a bioimage.io model package"
        )
    return path


def validate_package(path: str | Path, *, run_test: bool = True, name: str | None = None) -> Any:
    """Validate a bioimage.io package with the library's own checks; the ValidationSummary.

    ``run_test`` runs :func:`bioimageio.core.test_model` (format, weights load, the test
    input reproduces the test output); otherwise only the format is checked. ``name``:
    how errors call the package (default its path).

    Raises
    ------
    InputError
        The package is invalid (the first failing check, one line).

    Examples
    --------
    >>> validate_package("model.bioimageio.zip").status  # doctest: +SKIP
    'passed'
    """
    _offline()
    from bioimageio.core import load_description, test_model

    path = Path(path)
    name = name or str(path)
    if not path.exists():
        raise InputError(f"{name}: no such model package")
    source = _source(path)
    if run_test:
        summary = test_model(source, decimal=4)
    else:
        descr = load_description(source)
        summary = descr.validation_summary
    if summary.status != "passed" and not (not run_test and summary.status == "valid-format"):
        failed = [d for d in summary.details if d.status == "failed"]
        first = failed[0] if failed else None
        why = ""
        if first is not None:
            errors = getattr(first, "errors", None) or []
            why = f"{first.name}: " + (" ".join(str(errors[0].msg).split()) if errors else "")
        raise InputError(
            f"{name}: invalid bioimage.io model package ({why.strip()[:300] or summary.status})"
        )
    return summary


#: Written by :func:`import_package` into the unpacked package: the library versions that
#: tested it and the SHA-256 of every file they tested.
TESTED_STAMP = ".mdlma-tested.json"


def _tested_record(folder: Path) -> dict[str, Any]:
    import hashlib
    from importlib.metadata import version

    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != TESTED_STAMP):
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        files[file.relative_to(folder).as_posix()] = digest.hexdigest()
    return {
        "bioimageio.core": version("bioimageio.core"),
        "bioimageio.spec": version("bioimageio.spec"),
        "files": files,
    }


def unchanged_since_tested(path: str | Path) -> bool:
    """Whether ``path`` is a folder :func:`import_package` made whose files are byte for byte
    those :func:`bioimageio.core.test_model` passed, with the same library versions.

    Loading such a package needs only the format check: every SLURM array task and every
    ``mdlma infer`` would otherwise run the whole test again (seconds for a small network,
    minutes for a large one). Any changed, added or removed file, or another library
    version, means the full test again.
    """
    import json

    stamp = Path(path) / TESTED_STAMP
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == _tested_record(Path(path)))


class BioimageioModel:
    """A bioimage.io model package (2D, one input, one output) as a :class:`SegmentationModel`.

    The package is validated on load (format and test tensors, :func:`validate_package`);
    predictions run through ``bioimageio.core``'s pipeline with the package's own pre-
    and post-processing.

    Examples
    --------
    >>> model = BioimageioModel("model.bioimageio.zip")               # doctest: +SKIP
    >>> model.predict(np.zeros((1, 1, 64, 64), np.float32)).shape     # doctest: +SKIP
    (1, 4, 64, 64)
    """

    def __init__(self, path: str | Path, device: Any = "cpu", validate: bool = True) -> None:
        _offline()
        from bioimageio.core import create_prediction_pipeline, load_description
        from bioimageio.spec.model.v0_5 import ModelDescr, ParameterizedSize

        self.path = Path(path)
        if validate:
            # the format is checked in any case (load_description below)
            validate_package(self.path, run_test=not unchanged_since_tested(self.path))
        descr = load_description(_source(self.path))
        if not isinstance(descr, ModelDescr):
            raise InputError(
                f"{path}: not a bioimage.io model of format 0.5 ({type(descr).__name__})"
            )
        if len(descr.inputs) != 1 or len(descr.outputs) != 1:
            raise InputError(
                f"{path}: has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; expected one each"
            )
        self.descr = descr
        inp, out = descr.inputs[0], descr.outputs[0]
        space = [a for a in inp.axes if a.type == "space"]
        channel = [a for a in inp.axes if a.type == "channel"]
        out_channel = [a for a in out.axes if a.type == "channel"]
        self.spatial_dims = len(space)
        self.in_channels = len(channel[0].channel_names) if channel else 1
        self.num_classes = len(out_channel[0].channel_names) if out_channel else 1
        self.class_names = (
            [str(n) for n in out_channel[0].channel_names] if out_channel else ["foreground"]
        )
        sizes, steps = [], []
        for a in space:
            if isinstance(a.size, ParameterizedSize):
                # about 64 pixels: the smallest valid size at or above it
                steps_up = max(0, -(-(64 - a.size.min) // a.size.step))
                sizes.append(a.size.min + a.size.step * steps_up)
                steps.append(int(a.size.step))
            elif isinstance(a.size, int):
                sizes.append(a.size)
                steps.append(a.size)
            else:  # a size given by another tensor's axis: any size works here
                sizes.append(64)
                steps.append(1)
        # packages of this framework name the training patch (a valid size)
        mdlma = _mdlma_config(descr)
        preferred = mdlma.get("patch_size") if isinstance(mdlma, dict) else None
        if preferred and len(preferred) == len(sizes):
            sizes = [int(p) for p in preferred]
        self.patch_size = tuple(int(s) for s in sizes)
        self.divisor = tuple(steps)
        self.bytes_per_pixel = 2048  # unknown architecture: a generous guess
        self.axes = [str(a.id) for a in inp.axes]
        self.pipeline = create_prediction_pipeline(descr, devices=[str(device)] if device else None)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32 (the package's post-processing applied)."""
        from bioimageio.core import Sample, Tensor

        inp, out = self.descr.inputs[0], self.descr.outputs[0]
        # patches come (batch, channel, *spatial); the pipeline puts them in the
        # package's own axis order (channels last for Keras models)
        spatial = [str(a.id) for a in inp.axes if a.type == "space"]
        dims = tuple(d for d in ("batch", "channel") if d in self.axes) + tuple(spatial)
        if "channel" not in self.axes:
            batch = np.asarray(batch)[:, 0]
        sample = Sample(
            members={inp.id: Tensor.from_numpy(np.asarray(batch, dtype=np.float32), dims=dims)},
            stat={},
            id="batch",
        )
        result = self.pipeline.predict_sample_without_blocking(sample)
        tensor = result.members[out.id]
        order = [d for d in ("batch", "channel") if d in tensor.dims] + [
            d for d in tensor.dims if d not in ("batch", "channel")
        ]
        array = (
            tensor.transpose(order).data.values
            if hasattr(tensor, "transpose")
            else tensor.data.values
        )
        return np.ascontiguousarray(array, dtype=np.float32)


def _mdlma_config(descr: Any) -> dict[str, Any]:
    """The ``config.mdlma`` entry of a package (empty when it has none)."""
    config = getattr(descr, "config", None)
    value = getattr(config, "mdlma", None)
    if value is None and isinstance(config, dict):
        value = config.get("mdlma")
    if value is None and config is not None:
        value = (getattr(config, "model_extra", None) or {}).get("mdlma")
    return dict(value) if isinstance(value, dict) else {}


def import_package(path: str | Path, out: str | Path) -> Path:
    """Copy a bioimage.io package (unpacked) to ``out`` for use with ``mdlma infer``, tested.

    The unpacked copy is what :func:`bioimageio.core.test_model` tests, and the
    :data:`TESTED_STAMP` it gets lets later loads skip that test while its files are
    unchanged (:func:`unchanged_since_tested`).

    Examples
    --------
    >>> import_package("downloaded.zip", "models/unet")  # doctest: +SKIP
    """
    import json

    _offline()
    from bioimageio.spec import load_description, save_bioimageio_package_as_folder

    path, out = Path(path), Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    validate_package(path, run_test=False)  # the format first: clear errors, nothing written
    descr = load_description(_source(path))
    with atomic_path(out) as tmp:
        save_bioimageio_package_as_folder(descr, output_path=tmp)
        validate_package(tmp, name=str(path))
        (Path(tmp) / TESTED_STAMP).write_text(json.dumps(_tested_record(Path(tmp)), indent=1))
    return out
