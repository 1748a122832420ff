"""Deformable 2D registration of a located section onto its virtual section.

After :func:`~.match.locate_section` the section, mapped by its similarity transform,
lies on the grid of its virtual section; what is left is the tissue's own distortion
(stretching when cut and mounted, folds, uneven shrinkage). :func:`register_section`
estimates it with a method of :mod:`unified_framework.registration`:

* ``convexadam`` (default) -- :func:`~unified_framework.registration.convexadam.register_convexadam`
  (MIND-SSC features, so the stain's contrast need not be the CT's). convexAdam works
  on volumes, so the 2D pair is handed over as a thin slab of identical slices (as
  deep as two control-point steps, the least it accepts) and the in-plane components
  of the middle slice are kept.
* ``bspline`` -- SimpleITK B-spline transform (Mattes mutual information, L-BFGS-B,
  three resolution levels), the fallback when convexAdam's features find little.
* ``none`` -- the identity (the similarity transform only).

Fields follow :mod:`unified_framework.registration.fields` in 2D: ``(2, rows, cols)``
in micrometres, components ``(along rows, along columns)``, on the fixed (virtual
section's) grid, ``warped(p) = moving(p + u(p))``. Warping, inversion, saving and the
quality figures reuse that package through a one-slice slab (:func:`slab`), so the 2D
figures are the 3D ones of a field without through-plane motion: the Jacobian
determinant of the slab is the 2D one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

#: Methods :func:`register_section` offers.
METHODS = ("convexadam", "bspline", "none")


@dataclass
class SectionRegistration:
    """The result of :func:`register_section`."""

    #: ``(2, rows, cols)`` float32 displacements in µm on the virtual section's grid.
    field: np.ndarray
    #: The moving image warped onto the virtual section.
    warped: np.ndarray
    #: :func:`~unified_framework.registration.quality.quality_report` (folding, NCC/MI before/after).
    quality: dict[str, Any]
    method: str
    seconds: float
    params: dict[str, Any] = dataclass_field(default_factory=dict)


def slab(field2d: np.ndarray, depth: int = 1) -> np.ndarray:
    """A 2D field ``(2, h, w)`` as a 3D field ``(3, depth, h, w)`` without through-plane motion.

    Examples
    --------
    >>> slab(np.ones((2, 3, 4), np.float32), 2).shape
    (3, 2, 3, 4)
    """
    field2d = np.asarray(field2d, dtype=np.float32)
    if field2d.ndim != 3 or field2d.shape[0] != 2:
        raise InputError(f"field: shape {field2d.shape}; expected a 2D field (2, rows, cols)")
    out = np.zeros((3, depth, *field2d.shape[1:]), dtype=np.float32)
    out[1:] = field2d[:, None]
    return out


def warp2d(
    image: np.ndarray, field2d: np.ndarray, pixel_size: float, interpolation: str = "linear"
) -> np.ndarray:
    """Warp a 2D image (grey ``(h, w)`` or colour ``(h, w, c)``) with a 2D field: ``image(p + u(p))``.

    Examples
    --------
    >>> shift = np.zeros((2, 2, 3), np.float32); shift[1] = 1.0
    >>> warp2d(np.array([[0.0, 1, 2], [3, 4, 5]]), shift, 1.0).tolist()
    [[1.0, 2.0, 2.0], [4.0, 5.0, 5.0]]
    """
    from ..registration.fields import warp

    image = np.asarray(image)
    field3 = slab(field2d)
    spacing = (float(pixel_size),) * 3
    if image.ndim == 3:
        return np.stack(
            [
                warp(image[None, ..., c], field3, spacing, interpolation)[0]
                for c in range(image.shape[-1])
            ],
            axis=-1,
        )
    return warp(image[None], field3, spacing, interpolation)[0]


def invert2d(field2d: np.ndarray, pixel_size: float) -> np.ndarray:
    """Approximate inverse of a 2D field (:func:`unified_framework.registration.fields.invert`).

    Examples
    --------
    >>> float(invert2d(np.full((2, 4, 4), 0.5, np.float32), 1.0).mean())
    -0.5
    """
    from ..registration.fields import invert

    return invert(slab(field2d), (float(pixel_size),) * 3)[1:, 0]


def register_section(
    fixed: np.ndarray,
    moving: np.ndarray,
    pixel_size: float,
    method: str = "convexadam",
    params: dict[str, Any] | None = None,
    device: str | None = None,
) -> SectionRegistration:
    """Register ``moving`` (the section on the virtual grid) onto ``fixed`` (the virtual section).

    Parameters
    ----------
    fixed : numpy.ndarray ``(h, w)``
        The virtual section (grey values of the volume).
    moving : numpy.ndarray ``(h, w)``
        The section mapped onto the same grid, as one grey channel (e.g. the stain
        darkness, where tissue is bright like the sample in the scan).
    pixel_size : float
        Pixel size of both, µm.
    method : {"convexadam", "bspline", "none"}
        See the module docstring.
    params : dict, optional
        ``convexadam``: fields of
        :class:`~unified_framework.registration.convexadam.ConvexAdamParams`
        (default ``grid_sp=4``, ``disp_hw=3``, ``selected_niter=60``, ``lambda_weight=2``);
        ``bspline``: ``grid_px`` (control-point spacing in pixels, default 24),
        ``iterations`` (default 60).
    device : str, optional
        Torch device of convexAdam (default a GPU when there is one).

    Returns
    -------
    SectionRegistration
        Field, warped moving image and quality figures (folding, NCC/MI before/after).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> from scipy import ndimage
    >>> fixed = ndimage.gaussian_filter(rng.random((48, 48)), 3)
    >>> moving = np.roll(fixed, 1, axis=1)
    >>> result = register_section(fixed, moving, 1.0, "bspline")
    >>> result.quality["images"]["ncc"]["after"] > result.quality["images"]["ncc"]["before"]
    True
    """
    from ..registration.quality import quality_report

    if method not in METHODS:
        raise InputError(f"method: {method!r}; expected one of {', '.join(METHODS)}")
    fixed = np.asarray(fixed, dtype=np.float32)
    moving = np.asarray(moving, dtype=np.float32)
    if fixed.ndim != 2 or fixed.shape != moving.shape:
        raise InputError(
            f"section registration: fixed {fixed.shape} and moving {moving.shape}; expected two 2D images on one grid"
        )
    params = dict(params or {})
    start = time.perf_counter()
    if method == "convexadam":
        field2d, used = _convexadam(fixed, moving, pixel_size, params, device)
    elif method == "bspline":
        field2d, used = _bspline(fixed, moving, pixel_size, params)
    else:
        field2d, used = np.zeros((2, *fixed.shape), np.float32), {}
    seconds = time.perf_counter() - start
    warped = warp2d(moving, field2d, pixel_size)
    # Three slices: the central differences of the Jacobian need a z neighbour on each side.
    quality = quality_report(
        slab(field2d, 3), (float(pixel_size),) * 3, fixed=fixed, moving=moving, warped=warped
    )
    return SectionRegistration(field2d, warped, quality, method, seconds, used)


def _convexadam(
    fixed: np.ndarray,
    moving: np.ndarray,
    pixel_size: float,
    params: dict[str, Any],
    device: str | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    from dataclasses import asdict

    from ..registration.convexadam import ConvexAdamParams, register_convexadam

    defaults = {"grid_sp": 4, "disp_hw": 3, "selected_niter": 60, "lambda_weight": 2.0}
    try:
        p = ConvexAdamParams(**{**defaults, **params})
    except TypeError as exc:
        raise InputError(f"convexadam parameters: {exc}") from None
    smallest = 3 * p.grid_sp  # its correlation pools 3 control points along every axis
    if min(fixed.shape) < smallest:
        raise InputError(
            f"section registration: image {fixed.shape} is too small for convexadam (grid_sp={p.grid_sp}); expected sides >= {smallest}"
        )
    depth = smallest
    stack = lambda image: np.repeat(image[None], depth, axis=0)  # noqa: E731
    field3 = register_convexadam(
        stack(fixed), stack(moving), (float(pixel_size),) * 3, p, device=device
    )
    return np.ascontiguousarray(field3[1:, depth // 2]), asdict(p)


def _bspline(
    fixed: np.ndarray, moving: np.ndarray, pixel_size: float, params: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    from ..registration.convexadam import normalise

    unknown = set(params) - {"grid_px", "iterations"}
    if unknown:
        raise InputError(
            f"bspline parameters: {', '.join(sorted(unknown))}; expected grid_px, iterations"
        )
    grid_px = int(params.get("grid_px", 24))
    iterations = int(params.get("iterations", 60))

    def image(array: np.ndarray) -> Any:
        out = sitk.GetImageFromArray(normalise(array).astype(np.float64))
        out.SetSpacing((float(pixel_size),) * 2)
        return out

    f, m = image(fixed), image(moving)
    mesh = [max(1, int(round(n / grid_px))) for n in f.GetSize()]
    transform = sitk.BSplineTransformInitializer(f, mesh)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=iterations,
        maximumNumberOfCorrections=5,
    )
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(f, m)
    displacement = sitk.TransformToDisplacementField(
        transform,
        sitk.sitkVectorFloat64,
        f.GetSize(),
        f.GetOrigin(),
        f.GetSpacing(),
        f.GetDirection(),
    )
    xy = sitk.GetArrayFromImage(displacement)  # (rows, cols, 2): ITK's (x, y) components
    field2d = np.stack([xy[..., 1], xy[..., 0]]).astype(np.float32)
    return field2d, {"grid_px": grid_px, "iterations": iterations}


@dataclass
class MatchedSection:
    """A located section on its virtual section's grid, registered: what :func:`register_match` returns."""

    #: The virtual section (Volume, grey) at the section's pixel size, centred on the plane point.
    virtual: Any
    #: The section mapped onto the virtual grid by the similarity transform, ``(h, w, c)`` float32.
    mapped: np.ndarray
    #: Its stain darkness (one channel, tissue bright), the moving image of the registration.
    darkness: np.ndarray
    #: Where each section pixel lies in the volume (with the deformable field when registered).
    section_map: Any
    #: The deformable registration (None for ``method="none"``).
    registration: SectionRegistration | None


def register_match(
    volume: Any,
    section: Any,
    match: Any,
    method: str = "convexadam",
    params: dict[str, Any] | None = None,
    device: str | None = None,
) -> MatchedSection:
    """Cut the virtual section of a match, map the section onto it and register it deformably.

    Parameters
    ----------
    volume : Volume
        The grey volume the section was located in.
    section : Volume
        The section image (grey or colour) with its pixel size.
    match : Match
        :attr:`~.match.MatchResult.best` of :func:`~.match.locate_section`.
    method, params, device :
        As :func:`register_section` (``"none"``: the similarity transform only).

    Returns
    -------
    MatchedSection

    Examples
    --------
    >>> from unified_framework.histology.match import locate_section
    >>> result = locate_section(volume, section, axis=(1, 0, 0))      # doctest: +SKIP
    >>> done = register_match(volume, section, result.best, "bspline")  # doctest: +SKIP
    >>> done.registration.quality["jacobian"]["folding_fraction"]       # doctest: +SKIP
    0.0
    """
    from scipy import ndimage

    from .match import section_grey
    from .sampling import default_shape, virtual_section
    from .transfer import SectionMap

    if method not in METHODS:
        raise InputError(f"method: {method!r}; expected one of {', '.join(METHODS)}")
    pixel = float(min(section.spacing))
    shape = default_shape(volume, match.plane, pixel)
    virtual = virtual_section(volume, match.plane, pixel, shape, device=device)
    section_map = SectionMap.from_match(match, section.spatial_shape, section.spacing, shape, pixel)
    rows, cols = section_map.section_pixels_of_virtual()
    data = np.asarray(section.data)
    channels = [data[..., c] for c in range(data.shape[-1])] if section.axes == "yxc" else [data]
    # Outside the section: the glass around the tissue (the median of the image border), not
    # a fixed white or black, so that the section's rectangle does not look like tissue.
    mapped = np.stack(
        [
            ndimage.map_coordinates(
                ch.astype(np.float32), [rows, cols], order=1, cval=float(np.median(_border(ch)))
            )
            for ch in channels
        ],
        axis=-1,
    )
    from ..io import Volume

    grey = section_grey(
        Volume(
            mapped if section.axes == "yxc" else mapped[..., 0],
            (pixel, pixel),
            axes=section.axes if section.axes == "yxc" else "",
        )
    )
    darkness = float(grey.max()) - grey  # stained tissue bright, like the sample in the scan
    registration = None
    if method != "none":
        fixed = np.asarray(virtual.data, dtype=np.float32)
        registration = register_section(fixed, darkness, pixel, method, params, device)
        section_map.field = registration.field
    return MatchedSection(virtual, mapped, darkness, section_map, registration)


def _border(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
