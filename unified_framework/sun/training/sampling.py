"""Training patches from slices along any SUN axis, with augmentation.

Labels are turned into one-hot probabilities *before* any resampling, so diagonal
slices get soft targets (interpolated probabilities) and labels are never interpolated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..axes import AxisGrid, axis_grid, sample_slices, slice_footprint


@dataclass
class TrainingVolume:
    """One (image, labels) pair held in memory.

    Attributes
    ----------
    image : numpy.ndarray
        ``(channels, z, y, x)`` float32.
    labels : numpy.ndarray
        ``(z, y, x)`` uint8 class indices.
    """

    image: np.ndarray
    labels: np.ndarray

    def read_image(self, region) -> np.ndarray:
        return self.image[(slice(None), *region)]

    def read_one_hot(self, region, classes: int) -> np.ndarray:
        block = self.labels[tuple(region)]
        return (np.arange(classes, dtype=np.uint8).reshape(-1, 1, 1, 1) == block[None]).astype(
            np.float32
        )


def split_volume(
    volume: TrainingVolume, val_fraction: float
) -> tuple[TrainingVolume, TrainingVolume | None]:
    """Split along ``z``: the first part trains, the last ``val_fraction`` validates."""
    depth = volume.labels.shape[0]
    n_val = int(round(val_fraction * depth))
    if val_fraction <= 0 or n_val < 1 or depth - n_val < 1:
        return volume, None
    cut = depth - n_val
    return (
        TrainingVolume(volume.image[:, :cut], volume.labels[:cut]),
        TrainingVolume(volume.image[:, cut:], volume.labels[cut:]),
    )


class PatchSampler:
    """Draws square patches from random slices of random axes.

    Parameters
    ----------
    volumes : sequence of TrainingVolume
    axes : sequence of str
        Axes to slice along (each equally likely).
    classes : int
    patch_size : int
    foreground_fraction : float
        Share of patches centred on a voxel of a random non-background class present
        in the slice (as nnU-Net oversamples foreground).
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        axes: Sequence[str],
        classes: int,
        patch_size: int,
        foreground_fraction: float = 0.33,
    ) -> None:
        self.volumes = list(volumes)
        self.axes = list(axes)
        self.classes = classes
        self.patch_size = patch_size
        self.foreground_fraction = foreground_fraction
        sizes = np.array([v.labels.size for v in self.volumes], dtype=np.float64)
        self.volume_weights = sizes / sizes.sum()
        self.grids: dict[tuple[int, str], AxisGrid] = {
            (i, name): axis_grid(name, v.labels.shape)
            for i, v in enumerate(self.volumes)
            for name in self.axes
        }

    def sample(
        self, rng: np.random.Generator, count: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` patches: images ``(n, channels, P, P)``, targets ``(n, classes, P, P)``, valid ``(n, P, P)``."""
        patches = [self._one(rng) for _ in range(count)]
        return tuple(np.stack(parts) for parts in zip(*patches))  # type: ignore[return-value]

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = int(rng.choice(len(self.volumes), p=self.volume_weights))
        volume = self.volumes[index]
        grid = self.grids[(index, self.axes[int(rng.integers(len(self.axes)))])]
        inside = np.zeros(0, dtype=bool)
        while not inside.any():  # the outermost diagonal slices may only graze the volume
            i = int(rng.integers(grid.n_slices))
            inside = slice_footprint(grid, i, i + 1)[0]
        channels = volume.image.shape[0]
        image = sample_slices(volume.read_image, grid, i, i + 1, channels)[0]
        target = sample_slices(
            lambda r: volume.read_one_hot(r, self.classes), grid, i, i + 1, self.classes
        )[0]
        return self._crop(rng, image, target, inside)

    def _crop(
        self, rng: np.random.Generator, image: np.ndarray, target: np.ndarray, inside: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A ``patch_size`` window; only columns inside the volume count in the loss."""
        size = self.patch_size
        rows = image.shape[1]
        columns = np.flatnonzero(inside)
        lo_col, hi_col = (
            int(columns[0]),
            int(columns[-1]) + 1,
        )  # the footprint is one run of columns
        centre = None
        if rng.random() < self.foreground_fraction:
            hard = target[:, :, lo_col:hi_col].argmax(axis=0)
            present = [c for c in range(1, self.classes) if (hard == c).any()]
            if present:
                ys, xs = np.nonzero(hard == present[int(rng.integers(len(present)))])
                pick = int(rng.integers(len(ys)))
                centre = (int(ys[pick]), int(xs[pick]) + lo_col)
        starts = []
        for axis, (lo, hi) in enumerate(((0, rows), (lo_col, hi_col))):
            if hi - lo <= size:
                starts.append(max(min(lo, image.shape[1 + axis] - size), 0))
            elif centre is not None:
                starts.append(int(np.clip(centre[axis] - size // 2, lo, hi - size)))
            else:
                starts.append(int(rng.integers(lo, hi - size + 1)))
        window = (slice(starts[0], starts[0] + size), slice(starts[1], starts[1] + size))
        image, target = image[:, window[0], window[1]], target[:, window[0], window[1]]
        valid = np.broadcast_to(inside[window[1]][None, :], image.shape[-2:]).astype(np.float32)
        pad = ((0, size - image.shape[-2]), (0, size - image.shape[-1]))
        if pad[0][1] or pad[1][1]:
            image = np.pad(image, ((0, 0), *pad), mode="edge")
            target = np.pad(target, ((0, 0), *pad), mode="edge")
            valid = np.pad(valid, pad)  # padding carries no loss
        return image, target, valid


def augment(
    rng: np.random.Generator, images: np.ndarray, targets: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random flips, 90-degree rotations, blur, intensity scale/shift and Gaussian noise.

    Works on normalised images ``(n, channels, P, P)``; geometry changes apply to
    images, targets and the valid mask alike. The blur (as in nnU-Net) also teaches
    the network that diagonal slices, softened by interpolation, show the same
    structures as orthogonal ones.
    """
    from scipy import ndimage

    images, targets, valid = images.copy(), targets.copy(), valid.copy()
    for n in range(images.shape[0]):
        turns = int(rng.integers(4))
        flip = bool(rng.integers(2))
        for array in (images, targets):
            patch = np.rot90(array[n], turns, axes=(-2, -1))
            array[n] = patch[..., ::-1] if flip else patch
        patch = np.rot90(valid[n], turns)
        valid[n] = patch[..., ::-1] if flip else patch
        if rng.random() < 0.3:
            images[n] = ndimage.gaussian_filter(
                images[n], (0, rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8)), mode="nearest"
            )
        images[n] = images[n] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        images[n] += rng.normal(0, rng.uniform(0, 0.1), images[n].shape).astype(np.float32)
    return images, targets, valid
