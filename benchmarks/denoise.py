"""Denoising throughput: each filter on an N^3 volume in memory and chunked via Zarr (read, filter, write).

Goal (issue 21): the Zarr path takes at most 1.3x the in-memory time on a 256^3 volume.
The in-memory figure is the filter alone on a numpy array (one thread: SciPy and
scikit-image filter on one core); the Zarr figure is ``denoise_file``: it reads the
volume (stored in 64^3 zstd chunks) lazily, filters it in whole-plane slabs with the
method's halo along axis 0 (dask threads, one per core) and writes a Zarr store (lz4).
Wall and CPU seconds (all threads of this process) are printed for both, each the
fastest of up to ``--repeat`` runs (repeats stop after a minute per method); the
machine's load too: on a shared machine the figures measure what the other processes
left, and the CPU ratio is the steadier figure there.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/denoise.py
    python benchmarks/denoise.py --size 128 --methods gaussian median bm3d
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

#: Parameters that keep every method's cost moderate (documented defaults otherwise).
PARAMS = {
    "gaussian": {"sigma": 1.0},
    "median": {"size": 3},
    "bilateral": {"sigma_color": 0.1, "sigma_spatial": 1.0},
    "nl-means": {"h": 0.05, "patch_size": 3, "patch_distance": 2},
    "tv": {"weight": 0.1, "max_num_iter": 20},
    "wavelet": {"levels": 2},
    "bm3d": {"sigma": 0.05},
    "rings": {"size": 11},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="volume edge (the issue's goal: 256)")
    parser.add_argument("--chunks", type=int, default=64, help="chunk edge of the input store")
    parser.add_argument(
        "--methods", nargs="+", default=[m for m in PARAMS if m != "bm3d"], choices=list(PARAMS)
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per figure (the fastest counts)"
    )
    args = parser.parse_args()

    from unified_framework.data import make_implant_phantom
    from unified_framework.denoise import denoise, denoise_file
    from unified_framework.io import write_volume

    print(f"load before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="denoise-bench-"))
    image, _ = make_implant_phantom((args.size,) * 3, seed=1)
    write_volume(work / "in.zarr", image, chunks=args.chunks)
    voxels = image.size
    # Warm-up: the first chunked run pays for importing and starting zarr/dask/numcodecs.
    write_volume(work / "small.zarr", image[:16, :16, :16], chunks=8)
    denoise_file(work / "small.zarr", work / "small-out.zarr", "gaussian", {"sigma": 1.0})
    print(f"{args.size}^3 float32, Zarr chunks {args.chunks}^3")
    print(
        f"{'method':10s} {'memory s':>9s} {'cpu s':>6s} {'Mvox/s':>7s} {'Zarr s':>7s} {'cpu s':>6s} {'Mvox/s':>7s} "
        f"{'slab':>5s} {'ratio':>6s} {'goal':>6s} {'cpu ratio':>9s} {'max |diff|':>10s}"
    )
    for name in args.methods:
        params = PARAMS[name]
        runs: dict[str, list[tuple[float, float]]] = {"memory": [], "zarr": []}
        begun = time.perf_counter()
        for _ in range(max(1, args.repeat)):
            start, cpu = time.perf_counter(), time.process_time()
            whole = denoise(image, name, params)
            runs["memory"].append((time.perf_counter() - start, time.process_time() - cpu))
            shutil.rmtree(work / "out.zarr", ignore_errors=True)
            start, cpu = time.perf_counter(), time.process_time()
            info = denoise_file(work / "in.zarr", work / "out.zarr", name, params)
            runs["zarr"].append((time.perf_counter() - start, time.process_time() - cpu))
            if time.perf_counter() - begun > 60:
                break
        memory, memory_cpu = min(runs["memory"])
        chunked, chunked_cpu = min(runs["zarr"])
        from unified_framework.io import read_volume

        difference = float(np.abs(read_volume(work / "out.zarr").data - whole).max())
        shutil.rmtree(work / "out.zarr", ignore_errors=True)
        print(
            f"{name:10s} {memory:9.2f} {memory_cpu:6.1f} {voxels / memory / 1e6:7.2f} {chunked:7.2f} {chunked_cpu:6.1f} "
            f"{voxels / chunked / 1e6:7.2f} {info['chunks'][0]:5d} {chunked / memory:6.2f} {'<=1.3':>6s} "
            f"{chunked_cpu / memory_cpu:9.2f} {difference:10.2e}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
