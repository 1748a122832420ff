"""Tomographic reconstruction from parallel-beam projections: FBP and iterative methods.

Backends: tomopy when importable (the conda environment), else astra-toolbox (CPU
algorithms on the pip path). Methods:

* ``fbp`` -- filtered back-projection (Ram-Lak filter); tomopy's ``gridrec`` with tomopy
* ``sirt``, ``sart``, ``cgls`` -- iterative (``iterations``); tomopy has ``sirt`` and ``art``
* tomopy only: ``gridrec``, ``art``, ``mlem``, ``osem``, ``ospml_hybrid``, ``pml_hybrid``,
  ``tv``, ``grad``, ``tikh`` (a clear error names the ones astra offers)

Projections are ``(angles, rows, detector)`` (tomopy's layout) or one sinogram
``(angles, detector)``; the rotation axis is the detector's centre. The result is
``(rows, detector, detector)`` (one slice per detector row).

Examples
--------
>>> import numpy as np
>>> from unified_framework.recon import forward_project, reconstruct
>>> image = np.zeros((1, 32, 32), np.float32); image[0, 12:20, 12:20] = 1
>>> angles = np.linspace(0, np.pi, 60, endpoint=False)
>>> slices = reconstruct(forward_project(image, angles), angles, "fbp")
>>> slices.shape, bool(abs(float(slices[0, 16, 16]) - 1) < 0.2)
((1, 32, 32), True)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError

#: Methods astra-toolbox runs on the CPU (name here -> astra algorithm).
ASTRA_METHODS = {"fbp": "FBP", "sirt": "SIRT", "sart": "SART", "cgls": "CGLS"}
#: Methods only tomopy has.
TOMOPY_ONLY = ("gridrec", "art", "mlem", "osem", "ospml_hybrid", "pml_hybrid", "tv", "grad", "tikh")
METHODS = (*ASTRA_METHODS, *TOMOPY_ONLY)
ITERATIVE = {
    "sirt",
    "sart",
    "cgls",
    "art",
    "mlem",
    "osem",
    "ospml_hybrid",
    "pml_hybrid",
    "tv",
    "grad",
    "tikh",
}
#: Metadata key of the projection angles (degrees) in files from :func:`write_projections`.
ANGLES_KEY = "rotation_angle_deg"


def tomopy_available() -> bool:
    """Whether tomopy can be imported here."""
    return importlib.util.find_spec("tomopy") is not None


def pick_backend(method: str, backend: str = "auto") -> str:
    """The backend that runs ``method``: ``tomopy`` or ``astra``.

    Raises
    ------
    InputError
        For an unknown method, or a tomopy-only method where tomopy is missing (one
        line naming what is available instead).
    """
    if method not in METHODS:
        raise InputError(
            f"method: unknown reconstruction method {method!r}; expected one of {', '.join(METHODS)}",
            field="method",
        )
    if backend not in ("auto", "tomopy", "astra"):
        raise InputError(
            f"backend: expected auto, tomopy or astra, got {backend!r}", field="backend"
        )
    has_tomopy = tomopy_available()
    if backend == "tomopy" and not has_tomopy:
        raise InputError(
            "backend: tomopy is not installed here (it comes with the conda environment); use --backend astra",
            field="backend",
        )
    if method in TOMOPY_ONLY:
        if backend == "astra" or not has_tomopy:
            raise InputError(
                f"method: {method} is only in tomopy, which is not installed here (use the conda environment); "
                f"astra-toolbox offers {', '.join(ASTRA_METHODS)}",
                field="method",
            )
        return "tomopy"
    if backend == "auto":
        return "tomopy" if has_tomopy else "astra"
    return backend


def _check(projections: Any, angles: Any) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(projections, dtype=np.float32)
    if data.ndim == 2:
        data = data[:, None, :]
    if data.ndim != 3:
        raise InputError(
            f"projections: expected (angles, rows, detector) or a sinogram (angles, detector), got shape {data.shape}"
        )
    theta = np.asarray(angles, dtype=np.float64).ravel()
    if theta.size != data.shape[0]:
        raise InputError(
            f"angles: {theta.size} angles for {data.shape[0]} projections; expected one per projection"
        )
    if not np.isfinite(data).all():
        raise InputError("projections: contain NaN or infinite values")
    return data, theta


def _astra():
    try:
        import astra
    except ImportError:  # pragma: no cover - a dependency of the package
        raise BackendUnavailable(
            "astra-toolbox is not installed; pip install astra-toolbox"
        ) from None
    return astra


def forward_project(volume: Any, angles: Any) -> np.ndarray:
    """Parallel-beam projections ``(angles, rows, detector)`` of a ``(rows, n, n)`` volume (astra, CPU).

    ``angles`` in radians; the detector has ``n`` pixels of one voxel each.
    """
    astra = _astra()
    data = np.asarray(volume, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        raise InputError(f"volume: expected square slices (rows, n, n), got shape {data.shape}")
    theta = np.asarray(angles, dtype=np.float64)
    n = data.shape[1]
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n, theta)
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.empty((theta.size, data.shape[0], n), np.float32)
    try:
        for row in range(data.shape[0]):
            sino_id, sino = astra.create_sino(data[row], projector)
            astra.data2d.delete(sino_id)
            out[:, row] = sino
    finally:
        astra.projector.delete(projector)
    return out


def reconstruct(
    projections: Any,
    angles: Any,
    method: str = "fbp",
    iterations: int = 100,
    backend: str = "auto",
    progress: Any = None,
) -> np.ndarray:
    """Reconstruct slices from parallel-beam projections.

    Parameters
    ----------
    projections : array_like
        ``(angles, rows, detector)`` or a sinogram ``(angles, detector)``; line
        integrals (take ``-log`` of flat-field-corrected transmission first).
    angles : array_like
        Projection angles in radians, one per projection.
    method : str
        See :data:`METHODS` and the module docstring.
    iterations : int
        Iterations of an iterative method (SART: passes over all angles).
    backend : {"auto", "tomopy", "astra"}
    progress : callable, optional
        Called with the number of slices done (for a progress bar).

    Returns
    -------
    numpy.ndarray of float32
        ``(rows, detector, detector)`` slices.

    Raises
    ------
    InputError
        Bad shapes, angles, method or iterations; a tomopy-only method without tomopy.
    """
    use = pick_backend(method, backend)
    data, theta = _check(projections, angles)
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, (int, np.integer))
        or not 1 <= iterations <= 100000
    ):
        raise InputError(
            f"iterations: expected an integer from 1 to 100000, got {iterations!r}",
            field="iterations",
        )
    if use == "tomopy":
        import tomopy

        algorithm = {"fbp": "gridrec", "sart": "art"}.get(method, method)
        kwargs: dict[str, Any] = {"algorithm": algorithm}
        if method in ITERATIVE:
            kwargs["num_iter"] = int(iterations)
        out = tomopy.recon(data, theta, **kwargs)
        if progress:
            progress(data.shape[1])
        return np.asarray(out, np.float32)
    astra = _astra()
    rows, n = data.shape[1], data.shape[2]
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n, theta)
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.empty((rows, n, n), np.float32)
    try:
        for row in range(rows):
            sino_id = astra.data2d.create("-sino", proj_geom, data[:, row])
            rec_id = astra.data2d.create("-vol", vol_geom, 0)
            config = astra.astra_dict(ASTRA_METHODS[method])
            config["ProjectorId"] = projector
            config["ProjectionDataId"] = sino_id
            config["ReconstructionDataId"] = rec_id
            if method == "fbp":
                config["FilterType"] = "Ram-Lak"
            alg = astra.algorithm.create(config)
            try:
                count = (
                    1
                    if method == "fbp"
                    else int(iterations) * (theta.size if method == "sart" else 1)
                )
                astra.algorithm.run(alg, count)
                out[row] = astra.data2d.get(rec_id)
            finally:
                astra.algorithm.delete(alg)
                astra.data2d.delete([sino_id, rec_id])
            if progress:
                progress(1)
    finally:
        astra.projector.delete(projector)
    return out


def write_projections(
    path: str | Path, projections: np.ndarray, angles: np.ndarray, spacing: float = 1.0
) -> Path:
    """Write a projection stack to HDF5/NeXus (``/entry/data/data``) with its angles in degrees.

    The angles go to the stored metadata (``rotation_angle_deg``), which
    :func:`read_projections` reads back.
    """
    from ..io import Volume, write_volume

    volume = Volume(
        np.asarray(projections, np.float32),
        (1.0, float(spacing), float(spacing)),
        metadata={ANGLES_KEY: [float(a) for a in np.degrees(angles)]},
    )
    return write_volume(path, volume)


def read_projections(
    path: str | Path, angles_deg: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Read a projection stack and its angles (radians); also the detector pixel size (µm).

    Angles come from, in order: ``angles_deg=(first, last)`` (evenly spaced,
    inclusive of the first only), the metadata of :func:`write_projections`, an NXtomo
    ``rotation_angle`` dataset (``/entry/sample/rotation_angle`` or beside the data),
    or evenly over 180° with a warning-free default.

    Raises
    ------
    InputError
        An unreadable file, or angles that do not match the number of projections.
    """
    from ..io import read_volume

    volume = read_volume(path, allow_nan=False, grey=True, expect_ndim=(2, 3))
    data = np.asarray(volume.data, np.float32)
    count = data.shape[0]
    if angles_deg is not None:
        theta = np.radians(np.linspace(angles_deg[0], angles_deg[1], count, endpoint=False))
    else:
        stored = volume.metadata.get("attributes", {}).get("source_metadata")
        try:
            found = json.loads(stored).get(ANGLES_KEY) if isinstance(stored, str) else None
        except ValueError:
            found = None
        if found is None:
            found = _nxtomo_angles(path)
        theta = (
            np.radians(np.linspace(0.0, 180.0, count, endpoint=False))
            if found is None
            else np.radians(np.asarray(found, float))
        )
    if theta.size != count:
        raise InputError(
            f"{path}: {theta.size} rotation angles for {count} projections; expected one per projection"
        )
    return data, theta, float((volume.spacing or (1.0,))[-1])


def _nxtomo_angles(path: str | Path) -> list[float] | None:
    from ..io.formats import split_dataset

    file, _ = split_dataset(path)
    if file.suffix.lower() not in (".h5", ".hdf5", ".nxs", ".hdf"):
        return None
    import h5py

    with h5py.File(file, "r") as f:
        for name in (
            "entry/sample/rotation_angle",
            "entry/data/rotation_angle",
            "entry1/tomo_entry/data/rotation_angle",
        ):
            node = f.get(name)
            if isinstance(node, h5py.Dataset):
                return [float(v) for v in np.asarray(node).ravel()]
    return None


def reconstruct_file(
    input: str | Path,
    output: str | Path,
    method: str = "fbp",
    iterations: int = 100,
    backend: str = "auto",
    angles_deg: tuple[float, float] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Read projections, reconstruct and write the slices (format from ``output``'s suffix)."""
    from ..io import Volume, write_volume

    use = pick_backend(method, backend)
    data, theta, pixel = read_projections(input, angles_deg)
    slices = reconstruct(data, theta, method, iterations, use, progress=progress)
    write_volume(output, Volume(slices, (pixel, pixel, pixel)))
    return {
        "method": method,
        "backend": use,
        "shape": list(slices.shape),
        "angles": int(theta.size),
        "output": str(output),
    }


def projection_phantom(size: int = 64, rows: int = 4, seed: int = 0) -> np.ndarray:
    """A ``(rows, size, size)`` slab of the implant phantom without noise, rings or blur.

    Zero outside the reconstruction circle, so that every method sees the whole object.
    """
    from ..data import make_implant_phantom

    image, _ = make_implant_phantom(
        (max(rows, 8), size, size), seed=seed, noise=0.0, rings=0.0, blur=0.0
    )
    start = (image.shape[0] - rows) // 2
    slab = image[start : start + rows].astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    slab[:, (yy - centre) ** 2 + (xx - centre) ** 2 > (size / 2 - 1) ** 2] = 0
    return slab


__all__ = [
    "ANGLES_KEY",
    "ASTRA_METHODS",
    "METHODS",
    "TOMOPY_ONLY",
    "forward_project",
    "pick_backend",
    "projection_phantom",
    "read_projections",
    "reconstruct",
    "reconstruct_file",
    "tomopy_available",
    "write_projections",
]
