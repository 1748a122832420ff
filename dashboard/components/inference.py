"""The Inference page's pieces: find models and images, run or submit, preview the result."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unified_framework.errors import InputError

#: Images up to this many pixels (voxels) may run inside the dashboard; larger ones go to SLURM.
LOCAL_MAX_PIXELS = 32 * 2**20
#: Where the page writes results and the sample.
FOLDER = "inference"
MODEL_SUFFIXES = (".pt", ".pth", ".mdlma", ".keras")


def find_models(root: Path, max_depth: int = 4, limit: int = 200) -> list[Path]:
    """Model files and packages below ``root`` that :func:`~unified_framework.inference.load_model` opens.

    SUN packages and active-learning (HRNet) models (``.pt``), Keras files, nnU-Net model
    folders (``plans.json`` + ``dataset.json``: ``mdlma nnunet import`` or a training
    result), bioimage.io packages (folders with ``rdf.yaml`` and ``*.bioimageio.zip``).
    Hidden folders, Zarr stores and the insides of model folders are not entered.
    """
    from unified_framework.sun.slice_model import is_nnunet_folder

    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if len(found) >= limit or entry.name.startswith("."):
                continue
            if entry.is_dir():
                if (
                    (entry / "rdf.yaml").is_file()
                    or (entry / "bioimageio.yaml").is_file()
                    or is_nnunet_folder(entry)
                ):
                    found.append(entry)  # a model folder: its checkpoints are not models
                elif depth < max_depth and not entry.name.endswith((".zarr", ".work")):
                    walk(entry, depth + 1)
            elif entry.suffix in MODEL_SUFFIXES or entry.name.endswith(".bioimageio.zip"):
                found.append(entry)

    if root.is_dir():
        walk(root, 0)
    return found


def short_kind(path: Path) -> str:
    """A few words naming the kind of a model found by :func:`find_models` (for the model list).

    Examples
    --------
    >>> short_kind(Path("models/net.keras"))
    'Keras'
    """
    import json

    from unified_framework.inference import model_kind

    if path.suffix == ".keras":
        return "Keras"
    if (
        path.suffix == ".zip"
        or (path / "rdf.yaml").is_file()
        or (path / "bioimageio.yaml").is_file()
    ):
        return "bioimage.io"
    if path.is_dir():
        record = path / "mdlma_model.json"
        try:
            configuration = json.loads(record.read_text(encoding="utf-8"))["configuration"]
        except (OSError, ValueError, KeyError, TypeError):
            configuration = path.name.split("__")[-1]
        return f"nnU-Net {configuration}"
    kind = model_kind(path) or ""
    return "HRNet/U-Net (active learning)" if kind.startswith("active-learning") else "SUN"


def resolve(root: Path, text: str) -> str:
    """A path typed on the page: absolute, or relative to the home folder (``::`` suffix kept)."""
    path, sep, inner = text.strip().partition("::")
    full = Path(path).expanduser()
    full = full if full.is_absolute() else root / full
    return f"{full}{sep}{inner}"


def image_info(image: str) -> dict[str, Any]:
    """Shape, channels and pixel count of an image, read lazily (nothing but the header)."""
    from unified_framework.inference import ImageSource

    source = ImageSource(image)
    return {
        "shape": source.shape,
        "channels": source.channels,
        "pixels": math.prod(source.shape),
        "dims": len(source.shape),
    }


def model_info(model_path: str, dims: int) -> dict[str, Any]:
    """Kind, patch size, divisor, channels and classes of a model opened for ``dims`` spatial dims."""
    from unified_framework.inference import load_model, model_kind

    model = load_model(model_path, spatial_dims=dims)
    return {
        "kind": model_kind(model_path) or "",
        "spatial_dims": int(model.spatial_dims),
        "patch": tuple(int(p) for p in model.patch_size),
        "divisor": tuple(int(d) for d in model.divisor),
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
        "class_names": list(getattr(model, "class_names", []) or []),
    }


def default_output(root: Path, image: str, model: str) -> Path:
    """``<home>/inference/<image>-<model>.zarr``, numbered when it exists."""
    stem = f"{Path(image.partition('::')[0]).name.split('.')[0]}-{Path(model).name.split('.')[0]}"
    folder = root / FOLDER
    out = folder / f"{stem}.zarr"
    n = 2
    while out.exists() or out.with_name(out.name + ".work").exists():
        out = folder / f"{stem}-{n}.zarr"
        n += 1
    return out


def run_here(
    model: str,
    image: str,
    out: Path,
    settings: dict[str, Any],
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Tiled inference inside the dashboard's process (small images): prepare, blocks, finish.

    ``progress(done, total)`` is called after each block. Returns the run's report.
    """
    from unified_framework.inference import engine

    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    work = out.with_name(out.name + ".work")
    engine.prepare(work, model, image, **settings)
    todo, total = engine.pending_blocks(work)
    done = [total - len(todo)]

    def step(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    report = engine.run_blocks(work, workers=workers, progress=step)
    engine.finish(work, out)
    return report


def submit(model: str, image: str, out: Path, settings: dict[str, Any], tasks: int) -> Any:
    """Prepare the work folder here, then submit the ``infer`` template (``tasks`` array tasks + merge)."""
    from unified_framework import hpc
    from unified_framework.inference import engine

    if out.exists():
        raise InputError(f"{out}: already exists; choose another output")
    work = out.with_name(out.name + ".work")
    engine.prepare(work, model, image, **settings)
    return hpc.submit(
        "infer",
        {"model": model, "image": image, "out": str(out), "work_dir": str(work), "tasks": tasks},
        cwd=str(out.parent),
    )


def preview(out: Path, image: str, index: int | None = None, max_side: int = 1024):
    """A grey image and its labels for display: 2D from the smallest fitting pyramid level, 3D one z slice.

    Returns ``(grey uint8, labels, step)`` where ``step`` is the subsampling of the image.
    """
    import zarr

    from unified_framework.io import open_volume

    from .volumes import display_window, to_grey

    group = zarr.open_group(str(out), mode="r")
    levels = [k for k in ("0", "1", "2", "3", "4", "5", "6", "7", "8") if k in group]
    data = open_volume(image).data
    colour = data.ndim == group["0"].ndim + 1
    if group["0"].ndim == 3:
        z = int(
            np.clip(
                index if index is not None else group["0"].shape[0] // 2, 0, group["0"].shape[0] - 1
            )
        )
        labels = np.asarray(group["0"][z])
        step = max(1, math.ceil(max(labels.shape) / max_side))
        labels = labels[::step, ::step]
        plane = np.asarray(data[z][::step, ::step], np.float32)
    else:
        pick = levels[0]
        for name in levels:
            pick = name
            if max(group[name].shape) <= max_side:
                break
        labels = np.asarray(group[pick][:])
        step = max(1, round(group["0"].shape[0] / labels.shape[0]))
        plane = np.asarray(data[::step, ::step], np.float32)[: labels.shape[0], : labels.shape[1]]
        labels = labels[: plane.shape[0], : plane.shape[1]]
    if colour:
        plane = plane.mean(axis=-1)
    return to_grey(plane, display_window(plane)), labels, step


def make_sample(root: Path, side: int = 256, seed: int = 0) -> tuple[Path, Path]:
    """A small SUN model (untrained, fixed seed) and a grey phantom slice to try the page with.

    Returns ``(model, image)`` below ``<home>/inference/sample``.
    """
    import torch

    from unified_framework.data import make_implant_phantom
    from unified_framework.io import write_volume
    from unified_framework.sun.model_package import Normalization, SunModel, save_model
    from unified_framework.sun.networks import UNet2D, UNetConfig

    folder = root / FOLDER / "sample"
    folder.mkdir(parents=True, exist_ok=True)
    config = UNetConfig(depth=2, base_width=4, input_size=64, num_classes=3)
    torch.manual_seed(seed)
    package = SunModel(
        config,
        UNet2D(config).state_dict(),
        Normalization((0.0,), (255.0,), (100.0,), (50.0,)),
        ["background", "material", "implant"],
        (1.0, 1.0, 1.0),
        ("z", "y", "x"),
        "uint8",
        {},
    )
    model = save_model(folder / "model.pt", package)
    volume, _ = make_implant_phantom((8, side, side), seed=seed)
    plane = volume[4]
    grey = np.clip((plane - plane.min()) / (np.ptp(plane) or 1) * 255, 0, 255).astype(np.uint8)
    image = write_volume(folder / "image.tif", grey)
    return Path(model), Path(image)
