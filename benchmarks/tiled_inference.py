"""Tiled inference: equal to whole-image sliding windows, time and memory, workers, a memory cap.

Goals (issue 22) next to what was measured, CPU, one thread per process:

(a) the tiled engine (blocks, lazy Zarr input, Zarr output) vs whole-image sliding-window
    accumulation with the same model, tiles, overlap and Gaussian blending (what MONAI's
    ``sliding_window_inference`` does; MONAI itself is not installed here, so the
    reference is :func:`~unified_framework.inference.engine.predict_array`, which
    follows MONAI's grid and importance map): equal to 1e-5, time ratio <= 1.0x,
    peak RSS ratio <= 0.5x, on a 2D image and a 3D volume;
(b) throughput with 1 and 2 dask workers: parallel efficiency >= 80 %;
(c) images up to 4x larger than a memory cap set here are processed within the cap
    (peak RSS of the process, measured in a child process per run).

Every measurement runs in its own child process (``ru_maxrss`` of that child)::

    OMP_NUM_THREADS=1 python benchmarks/tiled_inference.py                 # small defaults
    OMP_NUM_THREADS=1 python benchmarks/tiled_inference.py --side 4096 --volume 256 --cap-mb 700
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 2**20


def make_model(folder: Path) -> Path:
    import torch

    from unified_framework.sun.model_package import Normalization, SunModel, save_model
    from unified_framework.sun.networks import UNet2D, UNetConfig

    config = UNetConfig(depth=3, base_width=8, input_size=128, num_classes=3)
    torch.manual_seed(0)
    model = SunModel(
        config,
        UNet2D(config).state_dict(),
        Normalization((0.0,), (255.0,), (100.0,), (50.0,)),
        ["background", "a", "b"],
        (1.0, 1.0, 1.0),
        ("z", "y", "x"),
        "uint8",
        {},
    )
    return save_model(folder / "model.pt", model)


def make_image(folder: Path, shape: tuple[int, ...]) -> Path:
    """A smooth random image (uint8 Zarr), written slab by slab."""
    import zarr

    path = folder / f"image_{'x'.join(map(str, shape))}.zarr"
    if path.exists():
        return path
    chunks = (256, 256) if len(shape) == 2 else (32, 128, 128)
    array = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="uint8")
    rng = np.random.default_rng(0)
    step = chunks[0]
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        array[start : start + rows] = rng.integers(0, 255, (rows, *shape[1:]), dtype=np.uint8)
    array.attrs["spacing"] = [1.0] * len(shape)
    return path


def child(args: argparse.Namespace) -> None:
    """One measurement in this (child) process; prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    import dask.array  # noqa: F401  (imports are not what is measured: warm them first)
    import skimage.filters  # noqa: F401
    import zarr  # noqa: F401

    import unified_framework.io  # noqa: F401
    from unified_framework.inference import infer, load_model, predict_array

    dims = 2 if args.what.endswith("2d") or args.what in ("workers",) else 3
    model = load_model(args.model, spatial_dims=dims)
    patch = tuple(args.patch)
    cluster = None
    if args.workers > 1:
        # Start-up (processes, imports) is not throughput: start and warm the workers first.
        import logging

        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            memory_limit=0,
        )
        with Client(cluster) as client:
            client.run(_warm)
    started = time.perf_counter()
    result: dict = {}
    if args.what.startswith("reference"):
        import zarr

        image = zarr.open_array(args.image, mode="r")[:][None].astype(np.float32)
        probs = predict_array(model, image, patch=patch, overlap=0.5)
        np.save(args.out, probs[:, :64, :64] if dims == 2 else probs[:, :8, :64, :64])
    else:
        out, report = infer(
            args.model,
            args.image,
            args.out,
            patch=patch,
            overlap=0.5,
            budget=int(args.budget_mb * MB),
            workers=args.workers,
            cluster=cluster,
        )
        result["tiles"] = report.tiles_predicted
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _warm() -> None:
    import torch

    import unified_framework.inference.engine  # noqa: F401
    import unified_framework.io  # noqa: F401

    torch.set_num_threads(1)


def run_child(**kwargs) -> dict:
    argv = [sys.executable, __file__, "--child"]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # With dask workers the work is in grandchildren: RUSAGE_CHILDREN covers them too.
    result["children_peak_mb"] = (
        max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    )
    return result


def compare(
    folder: Path, model: Path, shape: tuple[int, ...], patch: tuple[int, ...], budget_mb: float
) -> None:
    import zarr

    image = make_image(folder, shape)
    tag = "2d" if len(shape) == 2 else "3d"
    tiled = run_child(
        what=f"tiled{tag}",
        model=model,
        image=image,
        out=folder / f"t{tag}.zarr",
        patch=patch,
        budget_mb=budget_mb,
    )
    ref = run_child(
        what=f"reference{tag}",
        model=model,
        image=image,
        out=folder / f"r{tag}.npy",
        patch=patch,
        budget_mb=budget_mb,
    )
    corner = np.load(folder / f"r{tag}.npy")
    probs = zarr.open_group(str(folder / f"t{tag}.zarr"), mode="r")["probabilities"]
    mine = probs[:, :64, :64] if len(shape) == 2 else probs[:, :8, :64, :64]
    diff = float(np.abs(mine - corner).max())
    print(
        f"\n(a) {tag.upper()} {'x'.join(map(str, shape))}, patch {patch}, overlap 0.5, budget {budget_mb:g} MB"
    )
    print(f"    {'':28}{'goal':>12}{'measured':>14}")
    print(f"    {'max |tiled - reference|':28}{'<= 1e-5':>12}{diff:>14.2e}")
    print(
        f"    {'time tiled / reference':28}{'<= 1.0x':>12}{tiled['seconds'] / ref['seconds']:>13.2f}x"
        f"   ({tiled['seconds']:.1f} s vs {ref['seconds']:.1f} s)"
    )
    print(
        f"    {'peak RSS tiled / reference':28}{'<= 0.5x':>12}{tiled['peak_rss_mb'] / ref['peak_rss_mb']:>13.2f}x"
        f"   ({tiled['peak_rss_mb']:.0f} MB vs {ref['peak_rss_mb']:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--what", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--patch", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--budget-mb", type=float, default=256, help="engine budget per process (MB)"
    )
    parser.add_argument(
        "--side", type=int, default=2048, help="side of the 2D image (the issue: 16384)"
    )
    parser.add_argument(
        "--volume", type=int, default=96, help="side of the 3D volume (the issue: 512)"
    )
    parser.add_argument(
        "--cap-mb", type=float, default=600, help="memory cap of (c), MB of peak RSS"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=("a", "b", "c"), help="parts to skip"
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder)
        if "a" not in args.skip:
            compare(folder, model, (args.side, args.side), (128, 128), args.budget_mb)
            v = args.volume
            compare(folder, model, (v, v, v), (16, 64, 64), args.budget_mb)
        if "b" not in args.skip:
            image = make_image(folder, (args.side, args.side))
            runs = {}
            for workers in (1, 2):
                runs[workers] = run_child(
                    what="workers",
                    model=model,
                    image=image,
                    out=folder / f"w{workers}.zarr",
                    patch=(128, 128),
                    budget_mb=args.budget_mb,
                    workers=workers,
                )
            rate = {w: r["tiles"] / r["seconds"] for w, r in runs.items()}
            efficiency = rate[2] / (2 * rate[1])
            print(
                f"\n(b) dask workers (started and warmed before timing) on {args.side}^2 (load now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
            )
            print(f"    {'':28}{'goal':>12}{'measured':>14}")
            print(f"    {'tiles/s, 1 worker (here)':28}{'':>12}{rate[1]:>14.1f}")
            print(f"    {'tiles/s, 2 dask workers':28}{'':>12}{rate[2]:>14.1f}")
            print(f"    {'parallel efficiency':28}{'>= 80 %':>12}{100 * efficiency:>13.0f}%")
        if "c" not in args.skip:
            print(
                f"\n(c) peak RSS vs image size, budget {args.budget_mb:g} MB, cap {args.cap_mb:g} MB"
            )
            print(
                f"    {'image':>14}{'image MB':>10}{'probabilities MB':>18}{'peak RSS MB':>13}{'within cap':>12}"
            )
            base = args.side // 2
            for side in (base, 2 * base, 4 * base):
                image = make_image(folder, (side, side))
                r = run_child(
                    what="capped2d",
                    model=model,
                    image=image,
                    out=folder / f"c{side}.zarr",
                    patch=(128, 128),
                    budget_mb=args.budget_mb,
                )
                probs_mb = 3 * 4 * side * side / MB
                print(
                    f"    {f'{side}^2':>14}{side * side / MB:>10.0f}{probs_mb:>18.0f}{r['peak_rss_mb']:>13.0f}"
                    f"{'yes' if r['peak_rss_mb'] <= args.cap_mb else 'NO':>12}"
                )
    print(f"\nload after: {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
