"""Sample images that need no download: the implant phantom and files shipped by packages.

Every sample is returned as a :class:`unified_framework.io.Volume` (axis order
``(z, y, x)``, ``(y, x)`` for 2D images or ``(y, x, c)`` for colour ones, voxel size
in micrometres). Only images
that the installed wheels contain are offered: scikit-image's ``cells3d``, ``brain``
and friends download on first use, so they are not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .phantom import make_implant_phantom

__all__ = ["Sample", "list_samples", "load_sample"]

#: Voxel size of the phantom sample, micrometres (a typical SRµCT voxel).
PHANTOM_SPACING = (5.0, 5.0, 5.0)


@dataclass(frozen=True)
class Sample:
    """Description of one sample image."""

    name: str
    description: str
    ndim: int
    source: str


def _implant(labels: bool, **kwargs: Any):
    from ..io import Volume

    kwargs.setdefault("spacing", PHANTOM_SPACING)
    image, truth = make_implant_phantom(**kwargs)
    return Volume(
        truth if labels else image,
        kwargs["spacing"],
        {"sample": "implant-labels" if labels else "implant"},
    )


def _ct_small():
    from pydicom.data import get_testdata_file

    from ..io import read_volume

    return read_volume(get_testdata_file("CT_small.dcm"))


def _skimage_file(filename: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / filename


def _skimage(function: str, spacing: tuple[float, float]):
    import skimage.data

    from ..io import Volume

    return Volume(
        np.asarray(getattr(skimage.data, function)()),
        spacing,
        {"sample": function, "source": "scikit-image"},
    )


def _ihc():
    from ..io import read_volume

    # Read as a file, so the sample is what read_volume makes of a real RGB PNG (pixel
    # size from its pHYs chunk: 96 dpi, which says nothing about the tissue).
    volume = read_volume(_skimage_file("ihc.png"))
    volume.metadata.update(sample="ihc", source="scikit-image")
    return volume


def _catalogue() -> dict[str, tuple[Sample, Callable[..., Any], Callable[[], bool]]]:
    def always() -> bool:
        return True

    def skimage_ships(filename: str) -> Callable[[], bool]:
        return lambda: _skimage_file(filename).is_file()

    def pydicom_ships() -> bool:
        try:
            from pydicom.data import get_testdata_file

            return get_testdata_file("CT_small.dcm") is not None
        except ImportError:
            return False

    return {
        "implant": (
            Sample(
                "implant",
                "synthetic SRµCT of a degrading Mg screw in bone (64³ by default; see make_implant_phantom)",
                3,
                "generated",
            ),
            lambda **kw: _implant(False, **kw),
            always,
        ),
        "implant-labels": (
            Sample(
                "implant-labels",
                "ground truth of 'implant': 0 background, 1 bone, 2 residual implant, 3 degradation layer",
                3,
                "generated",
            ),
            lambda **kw: _implant(True, **kw),
            always,
        ),
        "ct-small": (
            Sample(
                "ct-small", "one 128x128 CT slice (pydicom test file CT_small.dcm)", 2, "pydicom"
            ),
            _ct_small,
            pydicom_ships,
        ),
        "shepp-logan": (
            Sample(
                "shepp-logan",
                "Shepp-Logan tomography phantom, 400x400 (scikit-image)",
                2,
                "scikit-image",
            ),
            lambda: _skimage("shepp_logan_phantom", (1.0, 1.0)),
            skimage_ships("phantom.png"),
        ),
        "cell": (
            Sample(
                "cell",
                "light-microscopy image of a cell, 660x550 (scikit-image)",
                2,
                "scikit-image",
            ),
            lambda: _skimage("cell", (1.0, 1.0)),
            skimage_ships("cell.png"),
        ),
        "ihc": (
            Sample(
                "ihc",
                "RGB immunohistochemistry image (hematoxylin + DAB), 512x512x3 (scikit-image ihc.png)",
                2,
                "scikit-image",
            ),
            _ihc,
            skimage_ships("ihc.png"),
        ),
    }


def list_samples() -> list[Sample]:
    """Return the samples that can be loaded on this installation, without network.

    Returns
    -------
    list of Sample
        Name, description, number of dimensions and source of each sample.
    """
    return [sample for sample, _, available in _catalogue().values() if available()]


def load_sample(name: str, **kwargs: Any):
    """Load a sample by name.

    Parameters
    ----------
    name : str
        One of the names of :func:`list_samples`.
    **kwargs
        For ``implant`` / ``implant-labels``: the arguments of
        :func:`~unified_framework.data.make_implant_phantom` (``shape``, ``seed``,
        ``spacing``, ``noise``, ``rings``, ``blur``). Other samples take none.

    Returns
    -------
    unified_framework.io.Volume
        The image with its voxel size.

    Raises
    ------
    InputError
        If ``name`` is unknown or not available here, or arguments do not fit.
    """
    catalogue = _catalogue()
    if name not in catalogue or not catalogue[name][2]():
        names = ", ".join(s.name for s in list_samples())
        raise InputError(f"sample {name!r}: unknown or not installed; expected one of {names}")
    _, loader, _ = catalogue[name]
    if kwargs and not name.startswith("implant"):
        raise InputError(f"sample {name!r}: takes no parameters (got {', '.join(kwargs)})")
    return loader(**kwargs)
