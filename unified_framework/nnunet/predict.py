"""Segment volume files with a trained nnU-Net model, into any format of the io layer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def predict_files(
    volume_paths: Sequence[str | Path],
    model_path: str | Path,
    labels_out: str | Path,
    *,
    probabilities_out: str | Path | None = None,
    axes: str | None = None,
    folds: Sequence[str] | None = None,
    device: Any = None,
    mirroring: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict with nnU-Net's own inference, or (``axes``) a 2d model along SUN's axes.

    Parameters
    ----------
    volume_paths : sequence of path
        One file per channel, any format the io layer reads.
    model_path : path
        A trained nnU-Net result folder (or one made by ``mdlma nnunet import``).
    labels_out : path
        Labels (uint8); the format follows the suffix.
    probabilities_out : path, optional
        Class probabilities, float16 ``(classes, z, y, x)`` (Zarr, HDF5, TIFF ...).
    axes : str, optional
        ``3``, ``9`` or names: run a 2d model along SUN's axes and fuse with SUN's
        accumulator (writes entropy and disagreement next to the labels too; resumable).
    folds : sequence of str, optional
        Folds to average (default every trained fold).
    device : str, optional
    mirroring : bool
        nnU-Net's test-time mirroring (nnU-Net-only path).

    Returns
    -------
    dict
        ``written`` (paths) and ``seconds``.

    Examples
    --------
    >>> predict_files(["scan.tif"], "models/implant-3d", "seg.zarr")  # doctest: +SKIP
    """
    from ..io import Volume, read_volume, write_volume
    from .model import NnUNetModel, predict_array

    started = time.perf_counter()
    if probabilities_out is not None:
        from ..io import detect_format

        if detect_format(probabilities_out, for_writing=True) != "zarr":
            raise InputError(
                f"{probabilities_out}: probabilities are 4D (classes, z, y, x) and go to a .zarr store"
            )
    if axes is not None:
        from ..sun.inference import Outputs, predict_to_files

        labels_out = Path(labels_out)
        result = predict_to_files(
            volume_paths,
            model_path,
            Outputs(
                labels_out,
                Path(probabilities_out) if probabilities_out else None,
                labels_out.with_name(_stem(labels_out) + "_entropy" + _suffix(labels_out)),
                labels_out.with_name(_stem(labels_out) + "_disagreement" + _suffix(labels_out)),
            ),
            axes=axes,
            device=device,
            progress=progress,
        )
        return {"written": result["written"], "seconds": time.perf_counter() - started}
    model = NnUNetModel.load(model_path, folds)
    volumes = [read_volume(p, expect_ndim=3, grey=True) for p in volume_paths]
    if len(volumes) != model.in_channels:
        raise InputError(
            f"{', '.join(map(str, volume_paths))}: {len(volumes)} channel file(s); the model expects {model.in_channels} "
            f"({', '.join(model.channel_names)})"
        )
    shapes = {tuple(v.shape) for v in volumes}
    if len(shapes) != 1:
        raise InputError(f"channels have different shapes {sorted(shapes)}; expected one shape")
    first = volumes[0]
    image = np.stack([np.asarray(v.data, np.float32) for v in volumes])
    spacing_mm = [s / 1000.0 for s in (first.spacing or (1.0, 1.0, 1.0))]
    labels, probabilities = predict_array(
        model,
        image,
        spacing_mm,
        device=device,
        mirroring=mirroring,
        probabilities=probabilities_out is not None,
    )
    written = [
        write_volume(
            labels_out,
            Volume(labels, first.spacing, origin=first.origin, direction=first.direction),
        )
    ]
    if probabilities_out is not None and probabilities is not None:
        written.append(
            write_probabilities(probabilities_out, probabilities, model.class_names, first.spacing)
        )
    return {"written": written, "seconds": time.perf_counter() - started}


def write_probabilities(
    path: str | Path,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None,
) -> Path:
    """Write float16 ``(classes, z, y, x)`` probabilities to a Zarr store (as SUN does), atomically."""
    import zarr

    from ..io import detect_format
    from ..utils.atomic import atomic_path

    path = Path(path)
    if detect_format(path, for_writing=True) != "zarr":
        raise InputError(f"{path}: probabilities are 4D (classes, z, y, x) and go to a .zarr store")
    with atomic_path(path) as tmp:
        array = zarr.open_array(
            str(tmp),
            mode="w",
            shape=probabilities.shape,
            chunks=(probabilities.shape[0], 64, 64, 64),
            dtype=np.float16,
        )
        array[...] = probabilities.astype(np.float16)
        array.attrs.update(
            {
                "axes": ["c", "z", "y", "x"],
                "class_names": list(class_names),
                "spacing": [float(s) for s in (spacing or (1.0, 1.0, 1.0))],
            }
        )
    return path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".ome.tif", ".tiff", ".tif", ".zarr", ".h5", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def _suffix(path: Path) -> str:
    return path.name[len(_stem(path)) :]
