"""The one model interface of tiled inference, and its adapters.

Any segmentation network plugs into :mod:`unified_framework.inference` by offering
:class:`SegmentationModel`: a ``predict(batch)`` from raw image patches to class
probabilities, plus the facts the tiling needs (spatial dimensions, channels, classes,
default patch size, the divisor patch sides must be a multiple of and a rough memory
cost per pixel). SUN's U-Net is adapted here (:class:`SunUNet`); any ``torch.nn.Module``
with logits out through :class:`TorchModule`; model files are opened by
:func:`load_model`, which other model families extend with :func:`register_loader`
(HRNet, nnU-Net and Keras models from their own packages).
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


class KerasModel:
    """A Keras (TensorFlow) model with channels-last tensors as a :class:`SegmentationModel`.

    Patches ``(n, c, *patch)`` are moved to ``(n, *patch, c)`` for the model and back.
    triton (if installed) is imported before TensorFlow: the other order crashes the
    process when triton is loaded later.

    Parameters
    ----------
    model : keras.Model or path-like
        The model, or a ``.keras`` file (loaded without compiling).
    spatial_dims, in_channels, num_classes : int, optional
        Default: read from the model's input and output shapes.
    patch_size : sequence of int, optional
        Default: the model's fixed input size, else 64 per axis.
    divisor : int
        Patch sides must be multiples of this.
    softmax : bool
        Apply a softmax (False: the model already returns probabilities).

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
        divisor: int = 1,
        softmax: bool = False,
        bytes_per_pixel: int = 1024,
    ) -> None:
        import contextlib

        # TensorFlow loaded before triton makes a later triton import crash the process
        # (bioimage.io, torch.compile and umap pull it in): load triton first if present.
        with contextlib.suppress(ImportError):
            import triton  # noqa: F401
        import keras

        if not hasattr(model, "predict"):
            model = keras.models.load_model(str(model), compile=False)
        self.keras = model
        inp, out = tuple(model.input_shape), tuple(model.output_shape)
        self.spatial_dims = int(spatial_dims or len(inp) - 2)
        self.in_channels = int(in_channels or inp[-1])
        self.num_classes = int(num_classes or out[-1])
        fixed = [int(d) for d in inp[1:-1] if d]
        self.patch_size = tuple(
            int(p)
            for p in (
                patch_size
                or (fixed if len(fixed) == self.spatial_dims else (64,) * self.spatial_dims)
            )
        )
        self.divisor = (int(divisor),) * self.spatial_dims
        self.softmax = softmax
        self.bytes_per_pixel = int(bytes_per_pixel)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, classes, *patch)`` float32."""
        x = np.moveaxis(np.asarray(batch, dtype=np.float32), 1, -1)
        y = np.asarray(self.keras(x, training=False), dtype=np.float32)
        if self.softmax:
            y = np.exp(y - y.max(axis=-1, keepdims=True))
            y /= y.sum(axis=-1, keepdims=True)
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


def _load_sun(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> SunUNet:
    return SunUNet(path, spatial_dims=spatial_dims, device=device)


def _load_bioimageio(path: Path, spatial_dims: int = 2, device: Any = "cpu", **_: Any) -> Any:
    from .bioimageio import BioimageioModel

    return BioimageioModel(path, device=device)


def load_model(path: str | Path, spatial_dims: int = 2, device: Any = "cpu") -> SegmentationModel:
    """Open a model file as a :class:`SegmentationModel`.

    SUN model packages (``.pt``) and bioimage.io packages (folder with ``rdf.yaml``,
    the YAML itself or a ``.zip``) are known; more via :func:`register_loader`.

    Parameters
    ----------
    path : path-like
    spatial_dims : int
        For models that can run either way (SUN's U-Net on a 3D volume: slice by slice).
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
    "Keras model (.keras)",
    lambda p: p.is_file() and p.suffix == ".keras",
    lambda p, **_: KerasModel(p),
)
register_loader("bioimage.io package (rdf.yaml, folder or .zip)", _is_bioimageio, _load_bioimageio)
register_loader("SUN model package (.pt)", _is_sun, _load_sun)


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
