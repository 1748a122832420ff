"""The pool of active learning: the 2D slices of one or more volumes along chosen axes.

A slice is named by a :class:`SliceId` (volume number, SUN axis, slice index), written
``"0:z:12"`` in files. Slice images come from :func:`unified_framework.sun.axes.sample_slices`,
so every one of SUN's nine axes works; diagonal slices are wider than the volume and
their corners outside it carry :data:`IGNORE` in labels (no loss, no score).
Volumes are read slice by slice, so a lazily opened volume (Zarr, memory map) is
never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..sun.axes import axis_grid, parse_axes, sample_slices, slice_footprint

#: Label value of pixels that carry no label (outside the volume, not painted).
IGNORE = 255


@dataclass(frozen=True, order=True)
class SliceId:
    """One slice of the pool.

    Examples
    --------
    >>> SliceId(0, "z", 12).key
    '0:z:12'
    >>> SliceId.parse("1:y+x:3")
    SliceId(volume=1, axis='y+x', index=3)
    """

    volume: int
    axis: str
    index: int

    @property
    def key(self) -> str:
        """The slice's name in files: ``volume:axis:index``."""
        return f"{self.volume}:{self.axis}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> SliceId:
        """Read a ``volume:axis:index`` name.

        Raises
        ------
        InputError
            If ``text`` is not such a name.
        """
        parts = str(text).split(":")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise InputError(f"slice {text!r}: expected volume:axis:index, e.g. 0:z:12")
        parse_axes(parts[1])
        return cls(int(parts[0]), parts[1], int(parts[2]))


def _channels_first(volume: Any, name: str) -> Any:
    shape = tuple(getattr(volume, "shape", ()))
    if len(shape) == 3:
        return volume[None] if isinstance(volume, np.ndarray) else _AddChannel(volume)
    if len(shape) == 4:
        return volume
    raise InputError(f"{name}: has shape {shape}; expected (z, y, x) or (channels, z, y, x)")


class _AddChannel:
    """A lazy ``(1, z, y, x)`` view of a lazily read ``(z, y, x)`` array."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = (1, *array.shape)
        self.dtype = array.dtype

    def __getitem__(self, key: tuple) -> np.ndarray:
        return np.asarray(self.array[key[1:]])[None]


class SlicePool:
    """The slices of ``volumes`` along ``axes``.

    Parameters
    ----------
    volumes : sequence of array-like
        Images ``(z, y, x)`` or ``(channels, z, y, x)``; numpy arrays or lazily read
        arrays (Zarr, ``numpy.memmap``) indexed slice by slice.
    axes : str or sequence of str
        SUN axes (``z``, ``3``, ``9``, ``z,y+x``, ...).
    names : sequence of str, optional
        Names of the volumes (messages).

    Examples
    --------
    >>> pool = SlicePool([np.zeros((4, 6, 8), np.float32)], axes="z,x")
    >>> len(pool), pool.ids[0].key, pool.image(pool.ids[-1]).shape
    (12, '0:z:0', (1, 4, 6))
    """

    def __init__(
        self,
        volumes: Sequence[Any],
        axes: str | Sequence[str] = "z",
        names: Sequence[str] | None = None,
    ) -> None:
        if not len(volumes):
            raise InputError("pool: no volumes given; expected at least one image volume")
        self.names = list(names) if names else [f"volume {i}" for i in range(len(volumes))]
        self.volumes = [_channels_first(v, n) for v, n in zip(volumes, self.names)]
        channels = {v.shape[0] for v in self.volumes}
        if len(channels) != 1:
            raise InputError(
                "pool: volumes have different numbers of channels; expected the same for all"
            )
        self.channels = channels.pop()
        self.axes = parse_axes(axes if isinstance(axes, str) else ",".join(axes))
        self.grids = {
            (i, axis): axis_grid(axis, v.shape[1:])
            for i, v in enumerate(self.volumes)
            for axis in self.axes
        }
        self.ids = [
            SliceId(i, axis, k)
            for i in range(len(self.volumes))
            for axis in self.axes
            for k in range(self.grids[(i, axis)].n_slices)
        ]
        self._known = set(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[SliceId]:
        return iter(self.ids)

    def check(self, sid: SliceId) -> SliceId:
        """Return ``sid`` if it is in the pool.

        Raises
        ------
        InputError
            If it is not.
        """
        if sid not in self._known:
            raise InputError(f"slice {sid.key}: not in the pool ({len(self)} slices)")
        return sid

    def slice_shape(self, sid: SliceId) -> tuple[int, int]:
        """``(rows, columns)`` of a slice image."""
        return self.grids[(sid.volume, sid.axis)].slice_shape

    def footprint(self, sid: SliceId) -> np.ndarray:
        """``(rows, columns)`` bool, True where the slice lies inside its volume."""
        grid = self.grids[(sid.volume, sid.axis)]
        inside = slice_footprint(grid, sid.index, sid.index + 1)[0]
        return np.broadcast_to(inside[None, :], grid.slice_shape).copy()

    def image(self, sid: SliceId) -> np.ndarray:
        """Raw image ``(channels, rows, columns)`` float32 of one slice."""
        self.check(sid)
        volume = self.volumes[sid.volume]

        def read(region: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(volume[(slice(None), *region)], dtype=np.float32)

        grid = self.grids[(sid.volume, sid.axis)]
        return sample_slices(read, grid, sid.index, sid.index + 1, self.channels)[0]

    def label(self, labels: Any, sid: SliceId, classes: int) -> np.ndarray:
        """Ground-truth labels of one slice ``(rows, columns)`` uint8 from a label volume.

        Orthogonal axes copy voxels; diagonal slices take the argmax of the one-hot
        labels resampled like the image (labels are never interpolated), and pixels
        outside the volume get :data:`IGNORE`.
        """
        self.check(sid)
        grid = self.grids[(sid.volume, sid.axis)]

        def read(region: tuple[slice, ...]) -> np.ndarray:
            block = np.asarray(labels[region])
            return (np.arange(classes).reshape(-1, 1, 1, 1) == block[None]).astype(np.float32)

        one_hot = sample_slices(read, grid, sid.index, sid.index + 1, classes)[0]
        out = one_hot.argmax(axis=0).astype(np.uint8)
        out[~self.footprint(sid)] = IGNORE
        return out


def check_labels(
    labels: np.ndarray, classes: int, name: str, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Check a label array (a slice or a volume) and return it as uint8.

    Values must be class indices ``0 .. classes - 1`` or :data:`IGNORE`.

    Raises
    ------
    InputError
        Shape mismatch, non-integer values, or values outside the class list.

    Examples
    --------
    >>> check_labels(np.array([[0, 2]]), 3, "x").dtype
    dtype('uint8')
    >>> check_labels(np.array([[0, 5]]), 3, "s.npy")
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: s.npy: label value 5 is outside the class list 0..2 (255: unlabelled)
    """
    labels = np.asarray(labels)
    if shape is not None and labels.shape != tuple(shape):
        raise InputError(
            f"{name}: labels have shape {labels.shape}; expected {tuple(shape)} like the image"
        )
    if labels.dtype.kind not in "uib":
        raise InputError(
            f"{name}: labels have dtype {labels.dtype}; expected integer class indices"
        )
    values = np.unique(labels)
    bad = values[((values < 0) | (values >= classes)) & (values != IGNORE)]
    if bad.size:
        raise InputError(
            f"{name}: label value {int(bad[0])} is outside the class list 0..{classes - 1} ({IGNORE}: unlabelled)"
        )
    return labels.astype(np.uint8)
