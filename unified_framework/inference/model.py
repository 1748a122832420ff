"""The one model interface of tiled inference, and its adapters.

Any segmentation network plugs into :mod:`unified_framework.inference` by offering
:class:`SegmentationModel`: a ``predict(batch)`` from raw image patches to class
probabilities, plus the facts the tiling needs (spatial dimensions, channels, classes,
default patch size, the divisor patch sides must be a multiple of and a rough memory
cost per pixel). SUN's U-Net is adapted here (:class:`SunUNet`), the active-learning
HRNet/U-Net models through :class:`SliceNetwork`, Keras models through :class:`KerasModel`,
nnU-Net models through :class:`unified_framework.nnunet.tiled.NnUNetTileModel`; any
``torch.nn.Module`` with logits out through :class:`TorchModule`. Model files and folders
are opened by :func:`load_model` (:data:`MODEL_KINDS` lists what it knows), which
:func:`register_loader` extends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError


@runtime_checkable
class SegmentationModel(Protocol):
    """What tiled inference needs of a model.

    Attributes
    ----------
    spatial_dims : int
        2 (patches ``(channels, y, x)``) or 3 (``(channels, z, y, x)``).
    in_channels : int
        Channels of the input patches.
    num_classes : int
        Channels of the returned probabilities.
    patch_size : tuple of int
        Default patch (tile) size, one side per spatial axis.
    divisor : tuple of int
        Patch sides must be multiples of these (e.g. ``2 ** (depth - 1)`` of a U-Net).
    bytes_per_pixel : int
        Rough upper bound of the working memory per patch pixel of ``predict``
        (activations), for the memory budget.
    """

    spatial_dims: int
    in_channels: int
    num_classes: int
    patch_size: tuple[int, ...]
    divisor: tuple[int, ...]
    bytes_per_pixel: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, num_classes, *patch)`` float32 of raw patches ``(n, in_channels, *patch)``."""
        ...


def resolve_device(device: Any = None) -> Any:
    """``None``/``"auto"``: the first CUDA GPU if there is one, else the CPU."""
    from ..sun.inference.predictor import resolve_device as resolve

    return resolve(device)


class TorchModule:
    """Any ``torch.nn.Module`` returning logits ``(n, classes, *patch)`` as a :class:`SegmentationModel`.

    Parameters
    ----------
    module : torch.nn.Module
        The network (put into eval mode).
    spatial_dims, in_channels, num_classes : int
    patch_size : sequence of int
    divisor : int or sequence of int
    softmax : bool
        Apply a softmax over the classes (False: the module returns probabilities).
    device : str or torch.device, optional
    bytes_per_pixel : int
        Working memory per patch pixel (activations) for the budget.
    preprocess : callable, optional
        Applied to each float32 batch before the network (normalisation).

    Examples
    --------
    >>> import torch
    >>> net = TorchModule(torch.nn.Conv2d(1, 2, 1), 2, 1, 2, (16, 16))
    >>> net.predict(np.zeros((3, 1, 16, 16), np.float32)).shape
    (3, 2, 16, 16)
    """

    def __init__(
        self,
        module: Any,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        patch_size: Sequence[int],
        divisor: int | Sequence[int] = 1,
        softmax: bool = True,
        device: Any = "cpu",
        bytes_per_pixel: int = 256,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.divisor = (
            (int(divisor),) * self.spatial_dims
            if isinstance(divisor, int)
            else tuple(int(d) for d in divisor)
        )
        self.softmax = softmax
        self.bytes_per_pixel = int(bytes_per_pixel)
        self.preprocess = preprocess

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, num_classes, *patch)`` float32."""
        import torch

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.preprocess is not None:
            batch = self.preprocess(batch)
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
            if self.softmax:
                out = torch.softmax(out.float(), dim=1)
            return out.float().cpu().numpy()


class SunUNet:
    """SUN's 2D U-Net as a :class:`SegmentationModel` for 2D images or, slice by slice, 3D volumes.

    Parameters
    ----------
    model : SunModel or path-like
        A trained SUN model (or its file).
    spatial_dims : int
        2: patches are images; 3: patches are stacks predicted slice by slice along ``z``
        (the U-Net sees one slice at a time, as SUN's per-axis prediction does).
    patch_size : sequence of int, optional
        Default: the training input size (and 1 slice along ``z`` for 3D... times 16).
    device : str or torch.device, optional

    Examples
    --------
    >>> net = SunUNet("model.pt", spatial_dims=2)          # doctest: +SKIP
    >>> net.predict(np.zeros((1, 1, 128, 128), np.float32)).shape  # doctest: +SKIP
    (1, 4, 128, 128)
    """

    def __init__(
        self,
        model: Any,
        spatial_dims: int = 2,
        patch_size: Sequence[int] | None = None,
        device: Any = "cpu",
    ) -> None:
        import torch

        from ..sun.inference.predictor import activation_bytes_per_pixel
        from ..sun.model_package import SunModel, load_model
        from ..sun.networks import fold_batch_norm

        if not isinstance(model, SunModel):
            model = load_model(model)
        if spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims {spatial_dims}: expected 2 or 3")
        self.sun = model
        self.device = resolve_device(device)
        self.memory_format = (
            torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        )
        self.network = fold_batch_norm(model.network(self.device)).to(
            memory_format=self.memory_format
        )
        self.spatial_dims = spatial_dims
        self.in_channels = model.config.in_channels
        self.num_classes = model.config.num_classes
        self.class_names = list(model.class_names)
        side = model.config.input_size
        d = model.config.divisor
        self.divisor = (1, d, d) if spatial_dims == 3 else (d, d)
        default = (min(16, side), side, side) if spatial_dims == 3 else (side, side)
        self.patch_size = tuple(int(p) for p in (patch_size or default))
        self.bytes_per_pixel = activation_bytes_per_pixel(model)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32 of raw patches ``(n, channels, *patch)``."""
        import torch

        batch = np.array(batch, dtype=np.float32, copy=True)  # normalised in place below
        self.sun.normalization.apply(batch, channel_axis=1)
        if self.spatial_dims == 3:  # (n, c, z, y, x) -> slices (n*z, c, y, x)
            n, c, z, y, x = batch.shape
            batch = batch.transpose(0, 2, 1, 3, 4).reshape(n * z, c, y, x)
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            images = images.contiguous(memory_format=self.memory_format)
            probs = torch.softmax(self.network(images).float(), dim=1).cpu().numpy()
        if self.spatial_dims == 3:
            probs = probs.reshape(n, z, self.num_classes, y, x).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(probs, dtype=np.float32)


class SliceNetwork:
    """A 2D torch network with SUN's normalisation, for 2D images or, slice by slice, 3D volumes.

    The active-learning models (HRNet or U-Net, ``mdlma al``) run through this; any 2D
    network returning logits ``(n, classes, y, x)`` and normalised like SUN's models can.

    Parameters
    ----------
    network : torch.nn.Module
    normalization : Normalization
        SUN's per-channel normalisation of raw intensities.
    class_names : sequence of str
    input_size : int
        Training patch side (the default tile side).
    divisor : int
        Tile sides must be multiples of this.
    spatial_dims : int
        2: images; 3: volumes, each patch a stack of slices along ``z``.
    patch_size : sequence of int, optional
        Default ``(input_size, input_size)``, or 16 slices of that for volumes.
    device : str, optional
    bytes_per_pixel : int
        Working memory per pixel of the network (activations).

    Examples
    --------
    >>> import torch
    >>> from unified_framework.sun.model_package import Normalization
    >>> norm = Normalization((0.0,), (255.0,), (100.0,), (50.0,))
    >>> net = SliceNetwork(torch.nn.Conv2d(1, 2, 1), norm, ["a", "b"], 16, 1, spatial_dims=3)
    >>> net.predict(np.zeros((1, 1, 4, 16, 16), np.float32)).shape
    (1, 2, 4, 16, 16)
    """

    def __init__(
        self,
        network: Any,
        normalization: Any,
        class_names: Sequence[str],
        input_size: int,
        divisor: int,
        spatial_dims: int = 2,
        patch_size: Sequence[int] | None = None,
        device: Any = "cpu",
        bytes_per_pixel: int = 4096,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims {spatial_dims}: expected 2 or 3")
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.normalization = normalization
        self.class_names = list(class_names)
        self.in_channels = len(normalization.mean)
        self.num_classes = len(self.class_names)
        self.spatial_dims = spatial_dims
        d, side = int(divisor), int(input_size)
        self.divisor = (1, d, d) if spatial_dims == 3 else (d, d)
        default = (16, side, side) if spatial_dims == 3 else (side, side)
        self.patch_size = tuple(int(p) for p in (patch_size or default))
        self.bytes_per_pixel = int(bytes_per_pixel)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32 of raw patches ``(n, channels, *patch)``."""
        import torch

        batch = np.array(batch, dtype=np.float32, copy=True)  # normalised in place below
        self.normalization.apply(batch, channel_axis=1)
        if self.spatial_dims == 3:  # (n, c, z, y, x) -> slices (n*z, c, y, x)
            n, c, z, y, x = batch.shape
            batch = batch.transpose(0, 2, 1, 3, 4).reshape(n * z, c, y, x)
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            probs = torch.softmax(self.network(images).float(), dim=1).cpu().numpy()
        if self.spatial_dims == 3:
            probs = probs.reshape(n, z, self.num_classes, y, x).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(probs, dtype=np.float32)


class KerasModel:
    """A Keras (TensorFlow) model with channels-last tensors as a :class:`SegmentationModel`.

    Patches ``(n, c, *patch)`` are moved to ``(n, *patch, c)`` for the model and back.
    A ``.keras`` file's sidecar ``MODEL.keras.json`` (the one ``mdlma sun predict`` reads,
    :mod:`unified_framework.tf.keras_model`) gives class names, the normalisation
    ``{"mean": [...], "std": [...]}``, the divisor and ``"outputs": "logits"``. A 2D
    network predicts 3D volumes slice by slice along ``z`` when ``slices`` is set.
    triton (if installed) is imported before TensorFlow: the other order crashes the
    process when triton is loaded later.

    Parameters
    ----------
    model : keras.Model or path-like
        The model, or a ``.keras`` file (loaded without compiling, in Keras' safe mode).
    spatial_dims, in_channels, num_classes : int, optional
        Default: read from the model's input and output shapes.
    patch_size : sequence of int, optional
        Default: the model's fixed input size, else 64 per axis (16 slices along ``z``
        with ``slices``).
    divisor : int, optional
        Patch sides must be multiples of this (default the sidecar's, else 1).
    softmax : bool, optional
        Apply a softmax (default: when the sidecar says ``"outputs": "logits"``).
    slices : bool
        A 2D network on 3D patches ``(n, c, z, y, x)``: slice by slice.
    mean, std : sequence of float, optional
        Per-channel normalisation ``(x - mean) / std`` (default the sidecar's, else none).

    Raises
    ------
    InputError
        An unreadable file, or a network that is not a per-pixel classifier.

    Examples
    --------
    >>> net = KerasModel("unet.keras", divisor=16)   # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        patch_size: Sequence[int] | None = None,
        divisor: int | None = None,
        softmax: bool | None = None,
        bytes_per_pixel: int = 1024,
        slices: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        import contextlib
        import json

        # TensorFlow loaded before triton makes a later triton import crash the process
        # (bioimage.io, torch.compile and umap pull it in): load triton first if present.
        with contextlib.suppress(ImportError):
            import triton  # noqa: F401
        import keras

        meta: dict[str, Any] = {}
        if not hasattr(model, "predict"):
            path = Path(model)
            sidecar = path.with_name(path.name + ".json")
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
                model = keras.models.load_model(str(path), compile=False, safe_mode=True)
            except Exception as exc:  # Keras and json raise many types for foreign files
                first = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise InputError(
                    f"{path}: not a readable Keras model ({type(exc).__name__}: {first})"
                ) from None
        self.keras = model
        inp, out = tuple(model.input_shape), tuple(model.output_shape)
        if len(inp) not in (4, 5) or len(out) != len(inp):
            raise InputError(
                f"{getattr(model, 'name', 'Keras model')}: maps {inp} to {out}; expected 2D or 3D images "
                "(batch, *spatial, channels) to per-pixel classes (batch, *spatial, classes)"
            )
        net_dims = int(spatial_dims or len(inp) - 2)
        self.slices = bool(slices) and net_dims == 2
        self.spatial_dims = 3 if self.slices else net_dims
        self.in_channels = int(in_channels or inp[-1])
        self.num_classes = int(num_classes or out[-1])
        names = meta.get("class_names") or [f"class_{i}" for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise InputError(
                f"Keras sidecar: {len(names)} class names for {self.num_classes} outputs"
            )
        self.class_names = [str(n) for n in names]
        fixed = [int(d) for d in inp[1:-1] if d]
        default = fixed if len(fixed) == net_dims else [64] * net_dims
        if self.slices:
            default = [16, *default]
        self.patch_size = tuple(int(p) for p in (patch_size or default))
        d = int(divisor if divisor is not None else meta.get("divisor", 1))
        self.divisor = (1, d, d) if self.slices else (d,) * self.spatial_dims
        self.softmax = (
            softmax if softmax is not None else meta.get("outputs", "softmax") == "logits"
        )
        norm = meta.get("normalization") or {}
        mean = mean if mean is not None else norm.get("mean")
        std = std if std is not None else norm.get("std")
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.bytes_per_pixel = int(bytes_per_pixel)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32."""
        x = np.moveaxis(np.asarray(batch, dtype=np.float32), 1, -1)
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        n = x.shape[0]
        if self.slices:  # (n, z, y, x, c) -> slices (n*z, y, x, c)
            x = x.reshape(n * x.shape[1], *x.shape[2:])
        y = np.asarray(self.keras(x, training=False), dtype=np.float32)
        if self.softmax:
            y = np.exp(y - y.max(axis=-1, keepdims=True))
            y /= y.sum(axis=-1, keepdims=True)
        if self.slices:
            y = y.reshape(n, -1, *y.shape[1:])
        return np.ascontiguousarray(np.moveaxis(y, -1, 1))


#: (name, detect(path) -> bool, load(path, spatial_dims, device) -> SegmentationModel)
_LOADERS: list[tuple[str, Callable[[Path], bool], Callable[..., Any]]] = []


def register_loader(name: str, detect: Callable[[Path], bool], load: Callable[..., Any]) -> None:
    """Teach :func:`load_model` a model file format (first registered match wins).

    Parameters
    ----------
    name : str
        Shown in error messages (e.g. ``"nnU-Net folder"``).
    detect : callable
        ``detect(path) -> bool``: whether ``path`` is such a model (cheap: suffix, a file inside).
    load : callable
        ``load(path, spatial_dims=..., device=...) -> SegmentationModel``.

    Examples
    --------
    >>> register_loader("demo", lambda p: p.suffix == ".demo", lambda p, **kw: None)  # doctest: +SKIP
    """
    _LOADERS.insert(0, (name, detect, load))


def _is_bioimageio(path: Path) -> bool:
    return (
        path.name.endswith(("rdf.yaml", "bioimageio.yaml"))
        or (path.is_dir() and any((path / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml")))
        or (path.suffix == ".zip" and path.is_file())
    )


def _is_sun(path: Path) -> bool:
    return path.is_file() and path.suffix in (".pt", ".pth", ".mdlma")


def _torch_file_format(path: Path) -> str | None:
    """The ``format`` entry of a framework model file (None: unreadable or none)."""
    import torch

    try:  # memory-mapped: the weights are not read
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises many types for foreign files; the loader says why
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def _is_al(path: Path) -> bool:
    from ..active_learning.model import FORMAT

    return _is_sun(path) and _torch_file_format(path) == FORMAT


def _is_nnunet(path: Path) -> bool:
    from ..sun.slice_model import is_nnunet_folder

    return is_nnunet_folder(path)


def _load_sun(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> SunUNet:
    return SunUNet(path, spatial_dims=spatial_dims, device=device)


def _load_al(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> SliceNetwork:
    from ..active_learning.model import load_al_model
    from ..sun.inference.predictor import activation_bytes_per_pixel

    model = load_al_model(path)
    # HRNet keeps ~270 channels at 1/4 resolution through ~30 layers, plus its
    # full-resolution refinement path: about 4 KB of activations per pixel.
    per_pixel = activation_bytes_per_pixel(model) if model.kind == "unet" else 4096  # type: ignore[arg-type]
    return SliceNetwork(
        model.network(),
        model.normalization,
        model.class_names,
        int(getattr(model.config, "input_size", 64)),
        model.divisor,
        spatial_dims=spatial_dims,
        device=device,
        bytes_per_pixel=per_pixel,
    )


def _load_bioimageio(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> Any:
    from .bioimageio import BioimageioModel

    return BioimageioModel(path, device=device)


def _load_keras(path: Path, spatial_dims: int = 2, **_: Any) -> KerasModel:
    return KerasModel(path, slices=spatial_dims == 3)


def _load_nnunet(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> Any:
    from ..nnunet.tiled import NnUNetTileModel

    return NnUNetTileModel(path, spatial_dims=spatial_dims, device=device)


def model_kind(path: str | Path) -> str | None:
    """Which kind of model ``path`` is (a :data:`MODEL_KINDS` name), or None; nothing is loaded.

    Examples
    --------
    >>> model_kind("models/phantom-2d")   # doctest: +SKIP
    'nnU-Net model folder (plans.json, dataset.json; made by mdlma nnunet import)'
    """
    path = Path(path)
    if not path.exists():
        return None
    return next((name for name, detect, _ in _LOADERS if detect(path)), None)


def load_model(path: str | Path, spatial_dims: int = 2, device: Any = "cpu") -> SegmentationModel:
    """Open a model file or folder as a :class:`SegmentationModel`.

    Known (:data:`MODEL_KINDS`): SUN model packages (``.pt``), active-learning models
    (HRNet or U-Net, ``.pt`` of ``mdlma al``), Keras files (``.keras``, with the optional
    ``.keras.json`` sidecar), nnU-Net result folders (trained, or made by ``mdlma nnunet
    import``: ``2d`` and ``3d_fullres``/``3d_lowres`` configurations) and bioimage.io
    packages (folder with ``rdf.yaml``, the YAML itself or a ``.zip``); more via
    :func:`register_loader`.

    Parameters
    ----------
    path : path-like
    spatial_dims : int
        The image's: 2D models run on 3D volumes slice by slice along ``z`` (SUN, HRNet,
        Keras and nnU-Net ``2d`` models); 3D models keep 3.
    device : str, optional

    Raises
    ------
    InputError
        Missing file or a format no loader knows.

    Examples
    --------
    >>> model = load_model("model.pt", spatial_dims=3)   # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such model file or folder")
    for _name, detect, load in _LOADERS:
        if detect(path):
            return load(path, spatial_dims=spatial_dims, device=device)
    known = ", ".join(name for name, _, _ in _LOADERS)
    raise InputError(f"{path}: not a model this framework can open; expected one of: {known}")


register_loader(
    "nnU-Net model folder (plans.json, dataset.json; made by mdlma nnunet import)",
    _is_nnunet,
    _load_nnunet,
)
register_loader("Keras model (.keras)", lambda p: p.is_file() and p.suffix == ".keras", _load_keras)
register_loader("bioimage.io package (rdf.yaml, folder or .zip)", _is_bioimageio, _load_bioimageio)
register_loader("SUN model package (.pt)", _is_sun, _load_sun)
register_loader("active-learning model (HRNet or U-Net, .pt of mdlma al)", _is_al, _load_al)

#: The kinds of model :func:`load_model` opens, in the order they are tried.
MODEL_KINDS: tuple[str, ...] = tuple(name for name, _, _ in _LOADERS)


def check_model_fits(
    model: SegmentationModel, spatial_shape: Sequence[int], channels: int, name: str
) -> None:
    """Refuse an image whose dimensionality or channels do not fit ``model`` (one line).

    Examples
    --------
    >>> import torch
    >>> net = TorchModule(torch.nn.Conv2d(3, 2, 1), 2, 3, 2, (16, 16))
    >>> check_model_fits(net, (64, 64), 1, "grey.png")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: grey.png: has 1 channel(s); the model expects 3
    """
    if len(spatial_shape) != model.spatial_dims:
        raise InputError(
            f"{name}: is {len(spatial_shape)}D (shape {tuple(spatial_shape)}); the model takes {model.spatial_dims}D images"
        )
    if channels != model.in_channels:
        raise InputError(
            f"{name}: has {channels} channel(s); the model expects {model.in_channels}"
        )


def patch_memory(model: SegmentationModel, patch: Sequence[int], batch: int = 1) -> int:
    """Bytes to predict ``batch`` patches of size ``patch`` (input, activations, output)."""
    pixels = math.prod(patch) * batch
    return pixels * (model.bytes_per_pixel + 4 * (model.in_channels + 2 * model.num_classes))
