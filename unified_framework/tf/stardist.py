"""StarDist (TensorFlow) nuclei instance segmentation, 2D and 3D: train on the user's data, predict.

Nothing downloads pre-trained weights: a model is trained here on the user's images
and instance masks (or one the user trained elsewhere is loaded from its folder). A model
is StarDist's own folder (``config.json``, ``weights_best.h5``, ``thresholds.json``)
plus ``mdlma_stardist.json`` (training data, settings, time). Images are normalised
per image to their 1 and 99.8 percentiles (csbdeep's ``normalize``), in training and
prediction alike.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import import_tensorflow

RECORD = "mdlma_stardist.json"


def _normalize(image: np.ndarray) -> np.ndarray:
    from csbdeep.utils import normalize

    return normalize(np.asarray(image, np.float32), 1, 99.8, axis=None)


def check_masks(masks: np.ndarray, name: str) -> np.ndarray:
    """Instance masks as uint16/uint32 (0 background), or a one-line error."""
    masks = np.asarray(masks)
    if masks.dtype.kind not in "iub" and not (
        masks.dtype.kind == "f" and np.all(masks == np.round(masks))
    ):
        raise InputError(f"{name}: masks of dtype {masks.dtype}; expected integer instance labels")
    if masks.size and masks.min() < 0:
        raise InputError(f"{name}: negative instance label; expected 0 (background), 1, 2 ...")
    return masks.astype(np.uint32 if masks.max(initial=0) > 65535 else np.uint16)


def _patch(shape: Sequence[int], grid: Sequence[int], want: int, depth: int) -> tuple[int, ...]:
    """Largest patch <= ``want`` per side that StarDist's U-Net takes (divisible by 2^depth x grid)."""
    out = []
    for side, g in zip(shape, grid):
        step = 2**depth * g
        out.append(max(step, min(want, side) // step * step))
    return tuple(out)


def train_stardist(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    out: str | Path,
    *,
    rays: int | None = None,
    epochs: int = 100,
    steps: int = 100,
    patch: int | None = None,
    batch: int = 4,
    depth: int = 2,
    filters: int = 16,
    val_images: Sequence[np.ndarray] | None = None,
    val_masks: Sequence[np.ndarray] | None = None,
    optimize_thresholds: bool = True,
    seed: int = 0,
    sources: Sequence[str] = (),
    anisotropy: Sequence[float] | None = None,
) -> Path:
    """Train a StarDist2D or StarDist3D model (by the images' dimensions).

    Parameters
    ----------
    images, masks : sequence of numpy.ndarray
        Images ``(y, x)`` or ``(z, y, x)`` and their instance masks.
    out : path
        Model folder to write (must not exist); written atomically.
    rays : int, optional
        Star-convex rays (default 32 in 2D, 64 in 3D).
    epochs, steps : int
        Training length (StarDist's defaults are 400 x 100).
    patch : int, optional
        Training patch side (default 64 in 2D, 32 in 3D, bounded by the images).
    batch, depth, filters : int
        Batch size, U-Net depth and base filters.
    val_images, val_masks : optional
        Validation data; default the last training image (or the only one).
    optimize_thresholds : bool
        Fit the probability and NMS thresholds on the validation data.
    seed : int
    sources : sequence of str
        Where the training data came from (recorded).
    anisotropy : sequence of float, optional
        3D: voxel size ratios for the rays (default isotropic).

    Returns
    -------
    pathlib.Path
        The model folder.

    Examples
    --------
    >>> train_stardist([image], [masks], "nuclei-model", epochs=2, steps=5)  # doctest: +SKIP
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: exists already; choose a new model folder")
    if not images or len(images) != len(masks):
        raise InputError(f"{len(images)} image(s) and {len(masks)} mask(s); expected pairs")
    ndim = np.asarray(images[0]).ndim
    if ndim not in (2, 3):
        raise InputError(f"images have {ndim} dimensions; expected 2D (y, x) or 3D (z, y, x)")
    xs, ys = [], []
    for i, (image, mask) in enumerate(zip(images, masks)):
        image = np.asarray(image)
        name = sources[i] if i < len(sources) else f"image {i}"
        if image.ndim != ndim:
            raise InputError(f"{name}: {image.ndim}D; the first image is {ndim}D")
        mask = check_masks(mask, name)
        if mask.shape != image.shape:
            raise InputError(f"{name}: masks of shape {mask.shape} for an image of {image.shape}")
        xs.append(_normalize(image))
        ys.append(mask)
    if val_images is not None and val_masks is not None:
        xv = [_normalize(np.asarray(v)) for v in val_images]
        yv = [check_masks(m, "validation masks") for m in val_masks]
    else:
        xv, yv = xs[-1:], ys[-1:]
        if len(xs) > 1:
            xs, ys = xs[:-1], ys[:-1]
    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(seed)
    smallest = np.min([x.shape for x in xs + xv], axis=0)
    started = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if ndim == 2:
            from stardist.models import Config2D, StarDist2D

            grid: tuple[int, ...] = (2, 2)
            config = Config2D(
                n_rays=rays or 32,
                grid=grid,
                n_channel_in=1,
                unet_n_depth=depth,
                unet_n_filter_base=filters,
                train_patch_size=_patch(smallest, grid, patch or 64, depth),
                train_batch_size=batch,
                train_epochs=epochs,
                train_steps_per_epoch=steps,
                train_tensorboard=False,  # TensorBoard is not installed
            )
            model: Any = StarDist2D(config, name=tmp.name, basedir=str(tmp.parent))
        else:
            from stardist import Rays_GoldenSpiral
            from stardist.models import Config3D, StarDist3D

            grid = (1, 2, 2)
            config = Config3D(
                rays=Rays_GoldenSpiral(rays or 64, anisotropy=anisotropy),
                grid=grid,
                anisotropy=anisotropy,
                n_channel_in=1,
                unet_n_depth=depth,
                unet_n_filter_base=filters,
                train_patch_size=_patch(smallest, grid, patch or 32, depth),
                train_batch_size=batch,
                train_epochs=epochs,
                train_steps_per_epoch=steps,
                train_tensorboard=False,
            )
            model = StarDist3D(config, name=tmp.name, basedir=str(tmp.parent))
        model.train(xs, ys, validation_data=(xv, yv), epochs=epochs, steps_per_epoch=steps)
        if optimize_thresholds:
            model.optimize_thresholds(xv, yv, predict_kwargs={"verbose": False})
        record = {
            "format": "mdlma-stardist-model",
            "ndim": ndim,
            "sources": list(sources),
            "epochs": epochs,
            "steps_per_epoch": steps,
            "rays": rays or (32 if ndim == 2 else 64),
            "patch": list(config.train_patch_size),
            "train_seconds": round(time.perf_counter() - started, 2),
            "thresholds": {"prob": model.thresholds.prob, "nms": model.thresholds.nms},
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_stardist(folder: str | Path) -> Any:
    """A StarDist2D/3D model from its folder.

    Raises
    ------
    InputError
        Not a StarDist model folder.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file() or not any(folder.glob("weights_*.h5")):
        raise InputError(
            f"{folder}: not a StarDist model folder (expected config.json and weights_best.h5)"
        )
    import_tensorflow()
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        ndim = int(config.get("n_dim", 2))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{config_file}: unreadable ({exc})") from None
    from stardist.models import StarDist2D, StarDist3D

    cls = StarDist2D if ndim == 2 else StarDist3D
    try:
        return cls(None, name=folder.name, basedir=str(folder.parent))
    except Exception as exc:  # StarDist/Keras raise many types for damaged folders
        raise InputError(
            f"{folder}: cannot load the StarDist model ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None


def predict_stardist(
    model: Any,
    image: np.ndarray,
    prob_thresh: float | None = None,
    nms_thresh: float | None = None,
) -> np.ndarray:
    """Instance labels (uint16/uint32) of one image with a StarDist model (folder or loaded).

    Examples
    --------
    >>> labels = predict_stardist("nuclei-model", image)  # doctest: +SKIP
    """
    if isinstance(model, (str, Path)):
        model = load_stardist(model)
    image = np.asarray(image)
    if image.ndim != model.config.n_dim:
        raise InputError(f"image is {image.ndim}D; the StarDist model is {model.config.n_dim}D")
    labels, _ = model.predict_instances(
        _normalize(image), prob_thresh=prob_thresh, nms_thresh=nms_thresh, verbose=False
    )
    labels = np.asarray(labels)
    return labels.astype(np.uint32 if labels.max(initial=0) > 65535 else np.uint16)
