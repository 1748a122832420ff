"""Standard model packages: SUN models to and from the bioimage.io model format (spec 0.5).

An exported package is a folder (or ``.zip``) with ``rdf.yaml``, TorchScript weights of
the U-Net (logits), a test input and its expected output (computed by this framework),
a README, and SUN's intensity normalisation and softmax as the format's own pre- and
post-processing steps, so ilastik, deepImageJ, QuPath and ``bioimageio.core`` apply the
model without this framework. Per-channel clipping to ``[low, high]`` followed by
``(v - mean) / std`` is written exactly as three standard steps: ``scale_linear`` to
``(v - low) / (high - low)`` per channel, ``clip`` to ``[0, 1]``, ``scale_linear`` to the
normalised value. Everything works offline: validation uses the library's own checks
(:func:`bioimageio.core.test_model`), which run the test input through the package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.atomic import atomic_path

logger = logging.getLogger(__name__)

UNET_DOI = "10.1007/978-3-319-24574-4_28"


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


def export_sun(
    model_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    authors: list[str] | None = None,
    license: str = "MIT",
    test_size: int | None = None,
) -> Path:
    """Export a SUN model package to a bioimage.io model package (folder, or ``.zip``).

    Parameters
    ----------
    model_path : path-like
        The SUN model (``.pt``).
    out : path-like
        A folder (created; must not exist) or a ``.zip`` file.
    name : str, optional
        Model name (default from the file name).
    authors : list of str, optional
    license : str
        SPDX license id of the weights.
    test_size : int, optional
        Side of the test input (default: the training input size).

    Returns
    -------
    pathlib.Path
        ``out``.

    Examples
    --------
    >>> export_sun("model.pt", "model.bioimageio.zip")  # doctest: +SKIP
    """
    _offline()
    import torch
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.generic.v0_3 import Author
    from bioimageio.spec.model.v0_5 import (
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        ClipDescr,
        ClipKwargs,
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
        ScaleLinearAlongAxisKwargs,
        ScaleLinearDescr,
        SizeReference,
        SoftmaxDescr,
        SoftmaxKwargs,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from ..sun.model_package import load_model
    from ..sun.networks import fold_batch_norm
    from .model import SunUNet

    model_path, out = Path(model_path), Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    sun = load_model(model_path)
    config, norm = sun.config, sun.normalization
    side = test_size or config.input_size
    if side % config.divisor:
        raise InputError(f"test size {side}: expected a multiple of {config.divisor}")
    channels = config.in_channels
    rng = np.random.default_rng(0)
    lo, hi = np.array(norm.low), np.array(norm.high)
    test_input = (
        rng.uniform(lo, hi, size=(side, side, channels)).transpose(2, 0, 1)[None].astype(np.float32)
    )
    test_output = SunUNet(sun).predict(test_input)
    span = np.maximum(hi - lo, 1e-12)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        network = fold_batch_norm(sun.network("cpu")).eval()
        scripted = torch.jit.trace(network, torch.from_numpy(test_input))
        scripted.save(str(root / "weights.torchscript.pt"))
        np.save(root / "test_input.npy", test_input)
        np.save(root / "test_output.npy", test_output)
        (root / "README.md").write_text(
            f"# {name or model_path.stem}\n\nA SUN 2D U-Net (depth {config.depth}, width {config.base_width}) "
            f"exported by the MDLMA unified framework. Classes: {', '.join(sun.class_names)}.\n"
            f"Input: {channels} channel(s), sides multiples of {config.divisor}; trained voxel size "
            f"{', '.join(f'{v:g}' for v in sun.voxel_size)} um.\n",
            encoding="utf-8",
        )
        space = ParameterizedSize(min=config.divisor, step=config.divisor)
        channel_names: list[Any] = [Identifier(f"channel{c}") for c in range(channels)]
        channel_axis = AxisId("channel")
        inputs = InputTensorDescr(
            id=TensorId("raw"),
            axes=[
                BatchAxis(),
                ChannelAxis(channel_names=channel_names),
                SpaceInputAxis(id=AxisId("y"), size=space),
                SpaceInputAxis(id=AxisId("x"), size=space),
            ],
            test_tensor=FileDescr(source=root / "test_input.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                EnsureDtypeDescr(kwargs=EnsureDtypeKwargs(dtype="float32")),
                ScaleLinearDescr(
                    kwargs=ScaleLinearAlongAxisKwargs(
                        axis=channel_axis,
                        gain=[float(g) for g in 1.0 / span],
                        offset=[float(o) for o in -lo / span],
                    )
                ),
                ClipDescr(kwargs=ClipKwargs(min=0.0, max=1.0)),
                ScaleLinearDescr(
                    kwargs=ScaleLinearAlongAxisKwargs(
                        axis=channel_axis,
                        gain=[float(g) for g in span / np.array(norm.std)],
                        offset=[float(o) for o in (lo - np.array(norm.mean)) / np.array(norm.std)],
                    )
                ),
            ],
        )
        outputs = OutputTensorDescr(
            id=TensorId("probabilities"),
            axes=[
                BatchAxis(),
                ChannelAxis(channel_names=[Identifier(_identifier(n)) for n in sun.class_names]),
                SpaceOutputAxis(
                    id=AxisId("y"),
                    size=SizeReference(tensor_id=TensorId("raw"), axis_id=AxisId("y")),
                ),
                SpaceOutputAxis(
                    id=AxisId("x"),
                    size=SizeReference(tensor_id=TensorId("raw"), axis_id=AxisId("x")),
                ),
            ],
            test_tensor=FileDescr(source=root / "test_output.npy"),
            data=IntervalOrRatioDataDescr(type="float32"),
            postprocessing=[SoftmaxDescr(kwargs=SoftmaxKwargs(axis=channel_axis))],
        )
        descr = ModelDescr(
            name=_name(name or model_path.stem),
            description="SUN 2D U-Net segmentation (MDLMA unified framework)",
            authors=[Author(name=a) for a in (authors or ["MDLMA unified framework"])],
            cite=[CiteEntry(text="Ronneberger et al., U-Net (MICCAI 2015)", doi=Doi(UNET_DOI))],
            license=license,  # type: ignore[arg-type]  # pydantic validates the SPDX id
            documentation=FileDescr(source=root / "README.md"),
            tags=["segmentation", "unet", "2d", "mdlma"],
            inputs=[inputs],
            outputs=[outputs],
            weights=WeightsDescr(
                torchscript=TorchscriptWeightsDescr(
                    source=root / "weights.torchscript.pt",
                    pytorch_version=Version(torch.__version__.split("+")[0]),
                )
            ),
            config={  # type: ignore[arg-type]  # pydantic builds the Config
                "mdlma": {
                    "format": "sun",
                    "voxel_size": list(sun.voxel_size),
                    "class_names": sun.class_names,
                }
            },
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
    return text if len(text) >= 5 else f"SUN U-Net {text}"


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


def validate_package(path: str | Path, *, run_test: bool = True) -> Any:
    """Validate a bioimage.io package with the library's own checks; the ValidationSummary.

    ``run_test`` runs :func:`bioimageio.core.test_model` (format, weights load, the test
    input reproduces the test output); otherwise only the format is checked.

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
    if not path.exists():
        raise InputError(f"{path}: no such model package")
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
            f"{path}: invalid bioimage.io model package ({why.strip()[:300] or summary.status})"
        )
    return summary


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
            validate_package(self.path)
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
        self.patch_size = tuple(int(s) for s in sizes)
        self.divisor = tuple(steps)
        self.bytes_per_pixel = 2048  # unknown architecture: a generous guess
        self.axes = [str(a.id) for a in inp.axes]
        self.pipeline = create_prediction_pipeline(descr, devices=[str(device)] if device else None)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32 (the package's post-processing applied)."""
        from bioimageio.core import Sample, Tensor

        inp, out = self.descr.inputs[0], self.descr.outputs[0]
        dims = tuple(str(a.id) for a in inp.axes)
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


def import_package(path: str | Path, out: str | Path) -> Path:
    """Validate a bioimage.io package and copy it (unpacked) to ``out`` for use with ``mdlma infer``.

    Examples
    --------
    >>> import_package("downloaded.zip", "models/unet")  # doctest: +SKIP
    """
    _offline()
    from bioimageio.spec import load_description, save_bioimageio_package_as_folder

    path, out = Path(path), Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    validate_package(path)
    descr = load_description(_source(path))
    with atomic_path(out) as tmp:
        save_bioimageio_package_as_folder(descr, output_path=tmp)
    return out
