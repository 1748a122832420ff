"""Tiled inference vs MONAI's sliding_window_inference, workers, a SLURM array, a memory cap.

Goals (issue 22) next to what was measured, CPU, one torch thread per process:

(a) the tiled engine (lazy reads from the file, Zarr output, bounded memory) vs MONAI's
    ``sliding_window_inference`` (the whole input and output in memory) with the same
    model, tiles, overlap and Gaussian blending (the engine's importance map is handed
    to MONAI as ``roi_weight_map``; MONAI's own Gaussian clips at 1e-3, so it would differ
    at tile corners), on a pyramidal TIFF of ``--side``² (issue: 16,384²) and a Zarr volume of
    ``--volume``³ (issue: 512³): equal to 1e-5 over the whole output, time ratio <= 1.0x,
    peak RSS ratio <= 0.5x. Both sides read the file and store probabilities and labels
    as the same Zarr (chunks, compressor); MONAI's time before storing is printed too.
    MONAI is installed with pip into ``.mdlma/bench-monai`` (not into the framework's
    environment) when missing: it is a reference, not a dependency.
(b) throughput with 1 and 2 dask workers (parallel efficiency >= 80 %: 2 workers against
    1, both on a warmed ``LocalCluster``; also against one process without dask) and of a
    1- and a 2-task SLURM array (``infer`` template on the running SLURM cluster, from
    submission to the merged output: 2 tasks against 1, and against one process);
(c) a sparse slide (tissue in a small window; tissue detection skips the background)
    whose pixels are 4x larger than a memory cap set here is processed within the cap.

Each side runs in its own child process, so each pays its own runtime (Python, torch)
and its ``ru_maxrss`` is its own peak; time is the child's wall and CPU seconds of the
work (reading the image included for both, imports excluded)::

    OMP_NUM_THREADS=1 python benchmarks/tiled_inference.py --side 2048 --volume 96     # quick
    OMP_NUM_THREADS=1 python benchmarks/tiled_inference.py --side 16384 --volume 512 --skip b
    OMP_NUM_THREADS=1 python benchmarks/tiled_inference.py --side 4096 --skip a c      # (b)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 2**20
TILE = 256  # TIFF tile side


#: Where the benchmark installs MONAI (pure Python; torch and numpy come from the framework's
#: environment): a folder of its own, so the framework's environment stays as installed.
MONAI_TARGET = Path(__file__).resolve().parents[1] / ".mdlma" / "bench-monai"


def ensure_monai() -> None:
    """MONAI is the reference of (a): install it into MONAI_TARGET once, and put that folder
    on the path of this process and of the child processes."""
    if importlib.util.find_spec("monai") is None:
        if not (MONAI_TARGET / ".complete").exists():
            print(f"installing monai into {MONAI_TARGET} (a reference only, not a dependency) ...")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
                + [str(MONAI_TARGET), "monai"],
                check=True,
            )
            (MONAI_TARGET / ".complete").write_text("ok\n")
        sys.path.insert(0, str(MONAI_TARGET))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(MONAI_TARGET), os.environ.get("PYTHONPATH", "")])
        )


def make_model(folder: Path, width: int = 8, depth: int = 3) -> Path:
    import torch

    from unified_framework.sun.model_package import Normalization, SunModel, save_model
    from unified_framework.sun.networks import UNet2D, UNetConfig

    config = UNetConfig(depth=depth, base_width=width, input_size=128, num_classes=3)
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


def _tile(level: int, ty: int, tx: int, window: tuple[int, int] | None) -> np.ndarray:
    """One TIFF tile of level ``level``: noise (seeded by position), or background outside ``window``."""
    if window is not None:
        lo, hi = (w >> level for w in window)
        if not (
            ty * TILE < hi and (ty + 1) * TILE > lo and tx * TILE < hi and (tx + 1) * TILE > lo
        ):
            return np.full((TILE, TILE), 235, np.uint8)  # background: no noise to draw
    rng = np.random.default_rng((level, ty, tx))
    tile = rng.integers(0, 160, (TILE, TILE), dtype=np.uint8)
    if window is not None:
        ys = np.arange(ty * TILE, (ty + 1) * TILE)[:, None]
        xs = np.arange(tx * TILE, (tx + 1) * TILE)[None, :]
        inside = (ys >= lo) & (ys < hi) & (xs >= lo) & (xs < hi)
        tile = np.where(inside, tile, np.uint8(235))
    return tile


def make_slide(folder: Path, side: int, window: tuple[int, int] | None = None) -> Path:
    """A pyramidal (SubIFD) tiled TIFF of ``side``², written tile by tile (never whole in memory)."""
    import tifffile

    path = folder / f"slide_{side}{'_sparse' if window else ''}.ome.tif"
    if path.exists():
        return path
    levels = [side]
    while levels[-1] // 2 >= 512:
        levels.append(levels[-1] // 2)

    def tiles(level: int, n: int):
        count = math.ceil(n / TILE)
        for ty in range(count):
            for tx in range(count):
                yield _tile(level, ty, tx, window)

    with tifffile.TiffWriter(path, bigtiff=True, ome=False) as tif:
        for level, n in enumerate(levels):
            tif.write(
                tiles(level, n),
                shape=(n, n),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="zlib",
                subifds=len(levels) - 1 if level == 0 else None,
                subfiletype=1 if level else 0,
            )
    return path


def make_volume(folder: Path, side: int) -> Path:
    """A random uint8 Zarr volume, written slab by slab."""
    import zarr

    shape = (side, side, side)
    path = folder / f"volume_{side}.zarr"
    if path.exists():
        return path
    array = zarr.open_array(str(path), mode="w", shape=shape, chunks=(32, 128, 128), dtype="uint8")
    rng = np.random.default_rng(0)
    for start in range(0, side, 32):
        rows = min(32, side - start)
        array[start : start + rows] = rng.integers(0, 160, (rows, side, side), dtype=np.uint8)
    array.attrs["spacing"] = [1.0] * 3
    return path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One measurement in this (child) process; prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    import dask.array  # noqa: F401  (imports are not what is measured: warm them first)
    import distributed  # noqa: F401  (dask's compute looks for it)
    import skimage.filters  # noqa: F401
    import zarr

    import unified_framework.io  # noqa: F401
    from unified_framework.inference import infer, load_model

    dims = len(args.patch)
    model = load_model(args.model, spatial_dims=dims)
    _warm(args.image)
    patch = tuple(args.patch)
    cluster = None
    if args.workers >= 1:  # 0: in this process, no dask
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
            client.run(_warm, args.image)
    if args.what.startswith("monai"):
        from monai.inferers import sliding_window_inference

        from unified_framework.inference import gaussian_weights

    result: dict = {}
    started, cpu = time.perf_counter(), _cpu()
    if args.what.startswith("monai"):
        from unified_framework.io import read_volume

        image = torch.from_numpy(np.asarray(read_volume(args.image).data, dtype=np.float32))

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            if args.what == "monai-memory":  # MONAI's own memory only: no model cost
                return torch.zeros((batch.shape[0], model.num_classes, *batch.shape[2:]))
            return torch.from_numpy(model.predict(batch.numpy()))

        with torch.no_grad():
            probs = sliding_window_inference(
                image[None, None],
                roi_size=patch,
                sw_batch_size=args.batch,
                predictor=predictor,
                overlap=0.5,
                mode="gaussian",
                roi_weight_map=torch.from_numpy(gaussian_weights(patch)),
                progress=False,
            )[0]
        del image
        result["predict_seconds"] = time.perf_counter() - started
        if args.what == "monai-memory":
            result["peak_rss_mb"] = _peak_mb()
            print(json.dumps(result))
            return
        write_like_engine(probs, args.out, tuple(args.block))
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - started, _cpu() - cpu
        result["peak_rss_mb"] = _peak_mb()
        # The whole output against the engine's, block by block (after the peak was taken).
        stored = zarr.open_group(args.compare, mode="r")
        theirs, labels = stored["probabilities"], stored["0"]
        diff, same = 0.0, 0
        step = 1024 if dims == 2 else 64
        for start in range(0, probs.shape[1], step):
            mine = probs[:, start : start + step].numpy()
            diff = max(diff, float(np.abs(mine - theirs[:, start : start + step]).max()))
            same += int((mine.argmax(0) == labels[start : start + step]).sum())
        result["max_diff"], result["labels_equal"] = diff, same / math.prod(probs.shape[1:])
    else:
        out, report = infer(
            args.model,
            args.image,
            args.out,
            model=None if cluster is not None else model,
            patch=patch,
            overlap=0.5,
            budget=int(args.budget_mb * MB),
            block=tuple(args.block) if args.block else None,
            workers=max(1, args.workers),
            cluster=cluster,
            tissue=args.tissue,
            probabilities=args.tissue == "off",
            keep_work=True,
        )
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - started, _cpu() - cpu
        result["peak_rss_mb"] = _peak_mb()
        result["tiles"] = report.tiles_predicted
        plan = json.loads(
            (Path(args.out).with_name(Path(args.out).name + ".work") / "plan.json").read_text()
        )
        result["batch"], result["block"] = plan["batch"], plan["block"]
    print(json.dumps(result))


def write_like_engine(probs, out: str, block: tuple[int, ...]) -> None:
    """MONAI's result stored as the engine stores its own (same chunks and compressor), slab by slab."""
    import zarr
    from numcodecs import Blosc

    group = zarr.open_group(out, mode="w")
    compressor = Blosc("zstd", 3, Blosc.BITSHUFFLE)
    shape = tuple(probs.shape[1:])
    stored = group.create_dataset(
        "probabilities",
        shape=probs.shape,
        chunks=(probs.shape[0], *block),
        dtype="float32",
        compressor=compressor,
    )
    labels = group.create_dataset(
        "0", shape=shape, chunks=block, dtype="uint8", compressor=compressor
    )
    for start in range(0, shape[0], block[0]):
        slab = probs[:, start : start + block[0]].numpy()
        stored[:, start : start + block[0]] = slab
        labels[start : start + block[0]] = slab.argmax(0).astype(np.uint8)


def _warm(image: str) -> None:
    """Imports, the reader of the image's format (opened, nothing read) and one torch thread."""
    import torch

    import unified_framework.inference.engine  # noqa: F401
    from unified_framework.io import open_volume

    open_volume(image)
    torch.set_num_threads(1)


def run_child(**kwargs) -> dict:
    argv = [sys.executable, __file__, "--child"]
    for key, value in kwargs.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, goal: str, value: str, note: str = "") -> None:
    print(f"    {name:30}{goal:>10}{value:>12}   {note}")


def compare(
    folder: Path,
    model: Path,
    image: Path,
    shape: tuple[int, ...],
    patch: tuple[int, ...],
    budget_mb: float,
    block: tuple[int, ...] | None,
) -> None:
    tag = f"{len(shape)}d"
    tiled = run_child(
        what="tiled",
        model=model,
        image=image,
        out=folder / f"t{tag}.zarr",
        patch=patch,
        budget_mb=budget_mb,
        block=block,
    )
    ref = run_child(
        what="monai",
        model=model,
        image=image,
        patch=patch,
        batch=tiled["batch"],
        block=tiled["block"],
        out=folder / f"m{tag}.zarr",
        compare=folder / f"t{tag}.zarr",
    )
    print(
        f"\n(a) {'x'.join(map(str, shape))} ({image.name}), patch {patch}, overlap 0.5, Gaussian, "
        f"batch {tiled['batch']}; engine: budget {budget_mb:g} MB, blocks {tuple(tiled['block'])}, "
        f"{tiled['tiles']} tiles predicted"
    )
    _row("", "goal", "measured")
    _row("max |engine - MONAI| (all)", "<= 1e-5", f"{ref['max_diff']:.1e}")
    _row("labels equal", "", f"{100 * ref['labels_equal']:.4f}%")
    _row(
        "time engine / MONAI (wall)",
        "<= 1.0x",
        f"{tiled['seconds'] / ref['seconds']:.2f}x",
        f"({tiled['seconds']:.0f} s vs {ref['seconds']:.0f} s; MONAI before writing: {ref['predict_seconds']:.0f} s)",
    )
    _row(
        "time engine / MONAI (CPU)",
        "<= 1.0x",
        f"{tiled['cpu_seconds'] / ref['cpu_seconds']:.2f}x",
        f"({tiled['cpu_seconds']:.0f} s vs {ref['cpu_seconds']:.0f} s)",
    )
    _row(
        "peak RSS engine / MONAI",
        "<= 0.5x",
        f"{tiled['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x",
        f"({tiled['peak_rss_mb']:.0f} MB vs {ref['peak_rss_mb']:.0f} MB)",
    )
    sys.stdout.flush()


def slurm_array(
    folder: Path, model: Path, image: Path, budget_mb: float, tasks: int, block: tuple[int, ...]
) -> dict:
    """Wall time of a ``tasks``-task ``infer`` array and its merge job, from submission to the end."""
    from unified_framework import hpc
    from unified_framework.inference.engine import prepare

    work, out = folder / f"array{tasks}.zarr.work", folder / f"array{tasks}.zarr"
    started = time.perf_counter()
    plan = prepare(
        work, model, str(image), patch=(128, 128), budget=int(budget_mb * MB), block=block
    )
    record = hpc.submit(
        "infer",
        {
            "model": str(model),
            "image": str(image),
            "out": str(out),
            "work_dir": str(work),
            "tasks": tasks,
            "cpus": 1,
            "mem": f"{int(budget_mb) + 1200}M",
            "merge_mem": "2G",
            "time": "30",
            "merge_time": "10",
        },
        backend="slurm",
        cwd=str(folder),
    )
    while True:
        jobs = hpc.status(record.job_ids, backend="slurm")
        if jobs and all(j.finished for j in jobs):
            break
        time.sleep(0.5)
    states = sorted({j.state for j in jobs})
    return {
        "seconds": time.perf_counter() - started,
        "states": states,
        "tiles": plan.grid().n_tiles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("what", "model", "image", "out", "compare"):
        parser.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    parser.add_argument("--patch", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tissue", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--budget-mb", type=float, default=512, help="engine budget (MB)")
    parser.add_argument("--side", type=int, default=2048, help="2D side (issue: 16384; 0: none)")
    parser.add_argument("--volume", type=int, default=96, help="3D side (issue: 512; 0: none)")
    parser.add_argument("--width", type=int, default=8, help="U-Net base width (3 classes)")
    parser.add_argument("--depth", type=int, default=3, help="U-Net depth (levels)")
    parser.add_argument("--cap-mb", type=float, default=1280, help="memory cap of (c), MB")
    parser.add_argument("--folder", type=Path, help="keep inputs here (default: a temporary one)")
    parser.add_argument(
        "--monai-memory",
        action="store_true",
        help="(a) MONAI's peak RSS only, its predictor returning zeros (quick, at full size)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("a", "b", "c"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(f"load before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        model = make_model(folder, args.width, args.depth)
        if args.monai_memory:
            ensure_monai()
            for shape, patch in (
                ((args.side,) * 2, (128, 128)),
                ((args.volume,) * 3, (16, 64, 64)),
            ):
                if not shape[0]:
                    continue
                image = (
                    make_slide(folder, shape[0])
                    if len(shape) == 2
                    else make_volume(folder, shape[0])
                )
                r = run_child(what="monai-memory", model=model, image=image, patch=patch, batch=4)
                print(
                    f"\n(a) MONAI peak RSS, {'x'.join(map(str, shape))}, zero-cost predictor: "
                    f"{r['peak_rss_mb']:.0f} MB ({r['predict_seconds']:.0f} s)",
                    flush=True,
                )
            return
        if "a" not in args.skip:
            ensure_monai()
            side, v = args.side, args.volume
            # Blocks of 16 x 16 tiles (2D) and 5 x 5 x 5 (3D): a tile that straddles two
            # blocks is predicted for each, so larger blocks repeat fewer tiles.
            if side:
                slide = make_slide(folder, side)
                compare(
                    folder, model, slide, (side, side), (128, 128), args.budget_mb, (1024, 1024)
                )
            if v:
                volume = make_volume(folder, v)
                compare(
                    folder, model, volume, (v, v, v), (16, 64, 64), args.budget_mb, (80, 320, 320)
                )
        if "b" not in args.skip:
            image = make_slide(folder, args.side)
            runs = {}
            for workers in (0, 1, 2):  # 0: in this process, no dask
                runs[workers] = run_child(
                    what="tiled",
                    model=model,
                    image=image,
                    out=folder / f"w{workers}.zarr",
                    patch=(128, 128),
                    budget_mb=args.budget_mb,
                    block=(512, 512),
                    workers=workers,
                )
            arrays = {
                n: slurm_array(folder, model, image, args.budget_mb, n, (512, 512)) for n in (1, 2)
            }
            tiles = runs[0]["tiles"]
            rate = {w: r["tiles"] / r["seconds"] for w, r in runs.items()}
            print(
                f"\n(b) {args.side}^2, blocks 512^2 ({tiles} tiles, each predicted once); load now "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            _row("", "goal", "measured")
            _row(
                "tiles/s, 1 process (no dask)",
                "",
                f"{rate[0]:.1f}",
                f"({runs[0]['seconds']:.1f} s)",
            )
            for w in (1, 2):
                _row(
                    f"tiles/s, {w} dask worker{'s' * (w > 1)}",
                    "",
                    f"{rate[w]:.1f}",
                    f"({runs[w]['seconds']:.1f} s; workers started and warmed first)",
                )
            _row(
                "parallel efficiency, dask",
                ">= 80 %",
                f"{50 * rate[2] / rate[1]:.0f} %",
                "(2 workers vs 1)",
            )
            _row("  vs 1 process without dask", "", f"{50 * rate[2] / rate[0]:.0f} %")
            arate = {n: a["tiles"] / a["seconds"] for n, a in arrays.items()}
            for n in (1, 2):
                _row(
                    f"tiles/s, {n}-task SLURM array",
                    "",
                    f"{arate[n]:.1f}",
                    f"({arrays[n]['seconds']:.1f} s from submission to merged, {'/'.join(arrays[n]['states'])})",
                )
            _row(
                "parallel efficiency, array",
                ">= 80 %",
                f"{50 * arate[2] / arate[1]:.0f} %",
                "(2 tasks vs 1)",
            )
            _row("  vs 1 process without dask", "", f"{50 * arate[2] / rate[0]:.0f} %")
        if "c" not in args.skip:
            # Pixels 4x the cap (uint8, one byte each); tissue in a window of 2048^2.
            side = math.ceil(math.sqrt(4 * args.cap_mb * MB) / 1024) * 1024
            centre = side // 2
            slide = make_slide(folder, side, (centre - 1024, centre + 1024))
            r = run_child(
                what="tiled",
                model=model,
                image=slide,
                out=folder / "capped.zarr",
                patch=(128, 128),
                budget_mb=min(args.budget_mb, 256),
                tissue="dark",
            )
            pixels_mb = side * side / MB
            print(
                f"\n(c) sparse slide {side}^2 (tissue 2048^2), labels only, cap {args.cap_mb:g} MB"
            )
            _row("", "goal", "measured")
            _row(
                "image pixels / cap",
                ">= 4x",
                f"{pixels_mb / args.cap_mb:.1f}x",
                f"({pixels_mb:.0f} MB of uint8 pixels)",
            )
            _row(
                "peak RSS",
                f"<= {args.cap_mb:g}",
                f"{r['peak_rss_mb']:.0f} MB",
                f"({r['tiles']} tiles predicted, {r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU)",
            )
    print(f"\nload after: {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
