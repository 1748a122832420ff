"""SUN segmentation quality by slicing axes: 9-axis against 3-axis fusion on the implant phantom.

Trains a SUN model (by default with the settings of the 48^3 model of
``tests/test_sun_pipeline.py``) on two phantoms of the given size, then prints, for
held-out phantoms, the mean foreground Dice of 3-axis and 9-axis fusion and their
difference, each class's predicted volume against the true one (a systematic over- or
under-segmentation), and each single view's Dice. It also prints what the diagonal
geometry alone costs: one-hot labels resampled to a diagonal axis and back (bilinear
both ways, as SUN's votes), scored against the labels.

Usage::

    python benchmarks/sun_axes_quality.py                      # 48^3, seeds 7-11: ~2 min on 2 cores
    python benchmarks/sun_axes_quality.py --size 128 --input-size 96 --steps 1500   # the test's 9-vs-3 setting: ~3 min
    python benchmarks/sun_axes_quality.py --size 96 --seeds 7 8 9
    python benchmarks/sun_axes_quality.py --noise 0.08         # a noisier phantom
    python benchmarks/sun_axes_quality.py --margin 8           # the interior only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def round_trip_dice(labels: np.ndarray, axis: str) -> np.ndarray:
    """Per-class Dice of one-hot ``labels`` resampled along ``axis`` and back (argmax)."""
    from unified_framework.sun.axes import ProbabilitySlab, axis_grid, sample_slices
    from unified_framework.sun.training.losses import dice_per_class

    classes = int(labels.max()) + 1
    one_hot = np.stack([labels == c for c in range(classes)]).astype(np.float32)
    grid = axis_grid(axis, labels.shape)
    slices = sample_slices(
        lambda region: one_hot[(slice(None), *region)], grid, 0, grid.n_slices, classes
    )
    values, _ = ProbabilitySlab(slices, grid, 0, grid.n_units).on_voxels(
        tuple(slice(0, n) for n in labels.shape)
    )
    return dice_per_class(values.argmax(0), labels, classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", type=int, default=48, help="phantom edge for training and testing (default 48)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[7, 8, 9, 10, 11],
        help="held-out phantom seeds (default 7-11)",
    )
    parser.add_argument("--steps", type=int, default=800, help="training steps (default 800)")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.04,
        help="phantom noise (default 0.04, the phantom's default)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--margin",
        type=int,
        default=0,
        help="score only voxels at least this far from the volume's faces (default 0: all)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=48,
        help="side of the training patches (default 48, as the test)",
    )
    parser.add_argument("--depth", type=int, default=3, help="U-Net depth (default 3, as the test)")
    parser.add_argument(
        "--width", type=int, default=8, help="U-Net base width (default 8, as the test)"
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        default=0,
        help="seed of patch sampling, augmentation and initial weights (default 0)",
    )
    args = parser.parse_args()

    import torch

    from unified_framework.data import CLASS_NAMES, make_implant_phantom
    from unified_framework.sun.axes import AXIS_NAMES
    from unified_framework.sun.inference import predict_volume
    from unified_framework.sun.training import TrainingConfig, train_sun
    from unified_framework.sun.training.losses import dice_per_class

    torch.set_num_threads(args.threads)
    shape = (args.size,) * 3
    config = TrainingConfig(axes="9", depth=args.depth, base_width=args.width, input_size=args.input_size, batch_size=8, steps=args.steps, learning_rate=3e-3,
                            val_every=100, log_every=20, patience=0, checkpoint_every=200, seed=args.train_seed)  # fmt: skip
    pairs = [make_implant_phantom(shape, seed=s, noise=args.noise) for s in (0, 1)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sun-axes-") as folder:
        result = train_sun(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            Path(folder) / "sun.pt",
            config,
            class_names=CLASS_NAMES,
            voxel_size=(5.0,) * 3,
            sources=["seed 0", "seed 1"],
        )
    scored = f", scored {args.margin} voxels and more from the faces" if args.margin else ""
    print(f"SUN 3 vs 9 axes: {args.size}^3 implant phantoms (noise {args.noise}{scored}), depth-{args.depth} width-{args.width} U-Net, "
          f"{args.input_size}^2 patches, {args.steps} steps, training seed {args.train_seed} ({time.perf_counter() - started:.0f} s)\n")  # fmt: skip
    print(
        f"{'seed':>4}  {'3 axes':>7}  {'9 axes':>7}  {'9 - 3':>7}   per class (bg, bone, implant, degradation), 9 axes"
    )
    differences, per_view = [], {name: [] for name in AXIS_NAMES}
    volume_ratios = {"3": [], "9": []}
    for seed in args.seeds:
        image, labels = make_implant_phantom(shape, seed=seed, noise=args.noise)
        inner = (slice(args.margin, args.size - args.margin),) * 3
        predicted = {
            axes: predict_volume(result.model, image, axes).labels[inner]
            for axes in ("3", "9", *AXIS_NAMES)
        }
        dice = {
            axes: dice_per_class(found, labels[inner], len(CLASS_NAMES))
            for axes, found in predicted.items()
        }
        true_volume = np.bincount(labels[inner].ravel(), minlength=len(CLASS_NAMES))
        for axes in volume_ratios:
            volume_ratios[axes].append(
                np.bincount(predicted[axes].ravel(), minlength=len(CLASS_NAMES)) / true_volume
            )
        three, nine = dice["3"][1:].mean(), dice["9"][1:].mean()
        differences.append(nine - three)
        for name in AXIS_NAMES:
            per_view[name].append(dice[name][1:].mean())
        print(
            f"{seed:>4}  {three:7.4f}  {nine:7.4f}  {nine - three:+7.4f}   {np.round(dice['9'], 3).tolist()}"
        )
    print(
        f"\n9 - 3 mean foreground Dice: mean {np.mean(differences):+.4f}, range {min(differences):+.4f} .. {max(differences):+.4f}"
    )
    print("predicted / true volume per class (bg, bone, implant, degradation), mean over the seeds: "
          + ", ".join(f"{axes} axes {np.round(np.mean(ratios, axis=0), 3).tolist()}" for axes, ratios in volume_ratios.items()))  # fmt: skip
    print("\nsingle views, mean foreground Dice over the seeds:")
    print("  " + "  ".join(f"{name} {np.mean(values):.3f}" for name, values in per_view.items()))
    labels = make_implant_phantom(shape, seed=args.seeds[0], noise=args.noise)[1]
    print(f"\ndiagonal round trip of one-hot labels (seed {args.seeds[0]}), per-class Dice:")
    for axis in ("y+x", "z+x"):
        print(f"  {axis:4} {np.round(round_trip_dice(labels, axis), 4).tolist()}")


if __name__ == "__main__":
    main()
