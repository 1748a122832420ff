"""SUN inference benchmark: throughput, memory, convolution efficiency, fusion overhead.

Runs every case in a fresh subprocess (so peak RSS is its own) on the implant phantom:

* ``mem3`` / ``mem9``: :func:`predict_volume` on an in-memory volume, 3 and 9 axes,
  with a 32 MiB working-memory budget (``--memory-mb``);
* ``zarr9``: ``predict_to_files`` from a Zarr volume to Zarr outputs through the
  resumable work directory (accumulator on disk), 9 axes, with a 256 MiB budget
  (``--zarr-memory-mb``; half of it caches accumulator chunks);
* ``naive9``: a reference that materialises all nine probability volumes, then averages;
* ``capped``: a Zarr volume 4x larger than an RSS limit, segmented (3 axes, a small
  depth-2 width-4 U-Net to keep the run short) while the parent kills the child if its
  RSS grows past the limit.

and prints voxels/s, peak RSS against input + output size, the achieved convolution
FLOP/s as a fraction of a plain batched convolution of the same shapes measured in the
same process, and the fusion overhead against network time: ``samp`` (reading the
input and resampling it to slices; for Zarr input this includes decoding its chunks)
plus ``vote`` (resampling probabilities back, encoding and adding the votes, fusing).
The naive reference and the convolution probe run inside ``reuse_freed_memory()``, as
the package's prediction loops do (see ``benchmarks/heap_reuse.py``). The network has random weights (speed does not depend on them); its default
architecture is the one ``mdlma sun train`` builds by default (depth 4, width 16), since
the fusion cost per voxel is fixed and its share depends on the network's size.

Usage::

    python benchmarks/sun_inference.py                   # 256^3: ~7 min on 2 cores, plus ~8 min for the capped case
    python benchmarks/sun_inference.py --skip capped     # the first four cases only
    python benchmarks/sun_inference.py --size 128 --capped-size 200
    python benchmarks/sun_inference.py --device cuda     # on a GPU machine
    python benchmarks/sun_inference.py --size 640 --skip mem9 zarr9 naive9 capped   # absolute RSS where the data outweigh the runtime

RSS is reported two ways: the absolute peak of the process, and the growth over the
process' RSS just before the input is loaded (after importing torch, building the
network and loading the compiled kernels: the runtime's fixed cost, about 1 GB with
this CUDA build of torch, which no input size changes). The peak is counted from that
point on (the kernel's high-water mark is reset there). The memory limit of the capped
case applies to the growth. The benchmark also prints that fixed cost and, from the
measured growth, the input + output size from which the absolute peak is within 1.2x.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

CLASSES = 4
#: Output bytes per voxel: labels uint8, probabilities float16 x classes, entropy and disagreement float16.
OUTPUT_BYTES_PER_VOXEL = 1 + 2 * CLASSES + 2 + 2


# --------------------------------------------------------------------------- child side


def _peak_rss() -> int:
    """This process' peak RSS since the baseline (VmHWM, reset there; unlike ru_maxrss it does not inherit the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import dask.array  # noqa: F401  (runtime libraries load before the baseline, like torch)
    import tqdm.auto  # noqa: F401
    import zarr  # noqa: F401

    import unified_framework.io._zarr  # noqa: F401
    from unified_framework.sun.inference import (
        Outputs,
        SlicePredictor,
        predict_to_files,
        predict_volume,
    )
    from unified_framework.sun.model_package import load_model
    from unified_framework.utils.heap import reuse_freed_memory

    model = load_model(args.model)
    budget = args.memory_mb * 2**20
    predictor = SlicePredictor(model, args.device, memory_budget=budget)
    predictor(np.zeros((1, 1, 64, 64), np.float32))  # load kernels before the baseline
    # ... and the compiled vote packing (numba's runtime is a fixed cost, like torch's)
    predict_volume(
        model, np.zeros((16, 16, 16), np.float32), "9", memory_budget=budget, predictor=predictor
    )
    if args.case in ("zarr9", "capped"):  # load the modules of the file path, too
        warm = Path(args.out) / "warm"
        predict_to_files(
            [str(Path(args.input).with_name("tiny.zarr"))],
            args.model,
            Outputs(warm / "l.zarr"),
            axes="9",
            workdir=warm / "w",
        )
    # Start the peak (VmHWM) afresh: the warm-up above may have peaked higher than
    # the baseline, and that peak is not the prediction's.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = psutil.Process().memory_info().rss
    print(f"baseline {baseline}", flush=True)
    started = time.perf_counter()
    result: dict = {"baseline_rss": baseline}
    if args.case in ("mem3", "mem9"):
        image = np.load(args.input)
        prediction = predict_volume(
            model,
            image,
            args.case[-1],
            return_probabilities=True,
            memory_budget=budget,
            predictor=predictor,
        )
        stats = prediction.stats
    elif args.case in ("zarr9", "capped"):
        out = Path(args.out)
        outputs = Outputs(
            out / "labels.zarr",
            out / "probabilities.zarr",
            out / "entropy.zarr",
            out / "disagreement.zarr",
        )
        axes = "9" if args.case == "zarr9" else "3"
        run = predict_to_files(
            [args.input],
            args.model,
            outputs,
            axes=axes,
            memory_budget=budget,
            chunks=(args.chunk,) * 3,
            device=args.device,
            workdir=out / "work",
        )
        stats = run["stats"]
    elif args.case == "naive9":
        image = np.load(args.input)
        with reuse_freed_memory():  # as predict_volume's loop: the network runs alike in all cases
            stats = _naive(predictor, image)
    result.update(
        seconds=time.perf_counter() - started,
        network_seconds=stats.network_seconds,
        sampling_seconds=stats.sampling_seconds,
        fusion_seconds=stats.fusion_seconds,
        network_pixels=stats.network_pixels,
        max_rss=_peak_rss(),
    )
    if args.case == "mem9":
        with reuse_freed_memory():
            result.update(_conv_efficiency(predictor, stats, args.size))
    Path(args.json).write_text(json.dumps(result))


def _naive(predictor, image):
    """Reference fusion: one full probability volume per axis, averaged at the end."""
    from unified_framework.sun.axes import AXIS_NAMES, ProbabilitySlab, axis_grid, sample_slices
    from unified_framework.sun.inference import RunStats

    stats = RunStats()
    read = lambda region: image[None][(slice(None), *region)]  # noqa: E731
    region = tuple(slice(0, n) for n in image.shape)
    per_axis = []
    for name in AXIS_NAMES:
        grid = axis_grid(name, image.shape)
        started = time.perf_counter()
        slices = sample_slices(read, grid, 0, grid.n_slices, 1)
        stats.sampling_seconds += time.perf_counter() - started
        probabilities = predictor(slices, stats)
        del slices
        started = time.perf_counter()
        values, _ = ProbabilitySlab(probabilities, grid, 0, grid.n_units).on_voxels(region)
        per_axis.append(np.ascontiguousarray(values))  # (classes, z, y, x) float32: one per axis
        del probabilities, values
        stats.fusion_seconds += time.perf_counter() - started
    started = time.perf_counter()
    mean = np.mean(per_axis, axis=0)
    labels = mean.argmax(0).astype(np.uint8)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(0) / math.log(CLASSES)
    stats.fusion_seconds += time.perf_counter() - started
    del labels, entropy
    return stats


def _conv_efficiency(predictor, stats, size: int) -> dict:
    """Achieved conv FLOP/s of the run against the same convolutions run alone."""
    import torch
    import torch.nn.functional as F

    network = predictor.network
    batch = max(1, predictor.batch_pixels // (size * size))
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=predictor.memory_format)
    layers = []

    def hook(module, inputs, output):
        layers.append((module, inputs[0].shape))

    handles = [
        m.register_forward_hook(hook)
        for m in network.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    with torch.inference_mode():
        network(x)
    for h in handles:
        h.remove()
    flops, seconds = 0.0, 0.0
    with torch.inference_mode():
        for module, shape in layers:
            n, c, h, w = shape
            kh, kw = module.kernel_size
            inputs = torch.randn(shape).contiguous(memory_format=predictor.memory_format)
            weight = module.weight
            if isinstance(module, torch.nn.ConvTranspose2d):
                layer_flops = 2 * n * c * h * w * module.out_channels * kh * kw
                run = functools.partial(
                    F.conv_transpose2d, inputs, weight, module.bias, stride=module.stride
                )
            else:
                layer_flops = (
                    2 * n * h * w * module.out_channels * c * kh * kw
                )  # stride 1, same padding
                run = functools.partial(
                    F.conv2d, inputs, weight, module.bias, padding=module.padding
                )
            run()
            timings = []
            for _ in range(7):  # the fastest of several runs: other processes only slow runs down
                begun = time.perf_counter()
                run()
                timings.append(time.perf_counter() - begun)
            seconds += min(timings)
            flops += layer_flops
    flops_per_pixel = flops / (batch * size * size)
    achieved = flops_per_pixel * stats.network_pixels / stats.network_seconds
    peak = flops / seconds
    return {
        "conv_flops_per_pixel": flops_per_pixel,
        "achieved_flops": achieved,
        "peak_flops": peak,
        "conv_probe_batch": batch,
    }


# --------------------------------------------------------------------------- parent side


def _run_case(
    case: str, args: argparse.Namespace, files: dict, cap_bytes: int | None = None
) -> dict:
    out = Path(files["tmp"]) / case
    out.mkdir(exist_ok=True)
    json_path = out / "result.json"
    input_path = (
        files["capped"] if case == "capped" else files["zarr"] if case == "zarr9" else files["npy"]
    )
    command = [
        sys.executable, __file__, "--child", case, "--model", files["capped_model" if case == "capped" else "model"], "--input", str(input_path), "--out", str(out),
        "--json", str(json_path), "--threads", str(args.threads), "--memory-mb", str({"capped": args.capped_memory_mb, "zarr9": args.zarr_memory_mb}.get(case, args.memory_mb)),
        "--size", str(args.size), "--chunk", str(args.chunk if case != "capped" else 32), "--device", args.device,
    ]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    state = {"baseline": None, "peak": 0, "killed": False}

    def watch_stdout():
        for line in child.stdout:
            if line.startswith("baseline "):
                state["baseline"] = int(line.split()[1])

    reader = threading.Thread(target=watch_stdout, daemon=True)
    reader.start()
    while child.poll() is None:
        try:
            rss = process.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if state["baseline"] is not None:  # the prediction's peak, not the warm-up's
            state["peak"] = max(state["peak"], rss)
        if (
            cap_bytes is not None
            and state["baseline"] is not None
            and rss - state["baseline"] > cap_bytes
        ):
            state["killed"] = True
            child.kill()
            break
        time.sleep(0.01)
    child.wait()
    reader.join(timeout=5)
    if state["killed"]:
        return {"killed": True, "sampled_peak": state["peak"], "baseline_rss": state["baseline"]}
    if child.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{child.stderr.read()[-3000:]}")
    result = json.loads(json_path.read_text())
    result["sampled_peak"] = state["peak"]
    result["killed"] = False
    return result


def _prepare(args: argparse.Namespace, tmp: Path) -> dict:
    import torch

    from unified_framework.data import CLASS_NAMES, make_implant_phantom
    from unified_framework.io import write_volume
    from unified_framework.sun.model_package import Normalization, SunModel, save_model
    from unified_framework.sun.networks import UNet2D, UNetConfig

    files = {"tmp": str(tmp)}
    for name, depth, width in (("model", args.depth, args.width), ("capped_model", 2, 4)):
        config = UNetConfig(depth=depth, base_width=width, input_size=2 ** (depth - 1) * 8)
        torch.manual_seed(0)
        model = SunModel(
            config,
            UNet2D(config).state_dict(),
            Normalization((0.0,), (1.1,), (0.35,), (0.25,)),
            list(CLASS_NAMES),
            (5.0,) * 3,
            ("z", "y", "x"),
            "float32",
        )
        files[name] = str(save_model(tmp / f"{name}.pt", model))
    image, _ = make_implant_phantom((args.size,) * 3, seed=0)
    np.save(tmp / "input.npy", image)
    write_volume(tmp / "input.zarr", image, spacing=(5.0,) * 3, chunks=args.chunk)
    files.update(npy=str(tmp / "input.npy"), zarr=str(tmp / "input.zarr"))
    write_volume(tmp / "tiny.zarr", image[:16, :16, :16], spacing=(5.0,) * 3)
    del image
    if args.capped_size:
        big, _ = make_implant_phantom((args.capped_size,) * 3, seed=1)
        write_volume(tmp / "capped.zarr", big, spacing=(5.0,) * 3, chunks=32)
        files["capped"] = str(tmp / "capped.zarr")
    return files


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", type=int, default=256, help="edge of the cubic test volume (default 256)"
    )
    parser.add_argument(
        "--depth", type=int, default=4, help="U-Net depth (default 4, as mdlma sun train)"
    )
    parser.add_argument(
        "--width", type=int, default=16, help="U-Net base width (default 16, as mdlma sun train)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=32,
        help="SUN working-memory budget of the in-memory cases (default 32)",
    )
    parser.add_argument(
        "--zarr-memory-mb",
        type=int,
        default=256,
        help="memory budget of the zarr9 case, half of it caching accumulator chunks (default 256)",
    )
    parser.add_argument("--chunk", type=int, default=64, help="Zarr chunk edge (default 64)")
    parser.add_argument(
        "--cap-mb",
        type=int,
        default=256,
        help="RSS-growth limit of the capped case (default 256; the volume is 4x that)",
    )
    parser.add_argument(
        "--capped-size",
        type=int,
        help="edge of the capped case's volume (default: 4x the cap in float32)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("mem3", "mem9", "zarr9", "naive9", "capped"),
        help="cases to leave out",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--model", "--input", "--out", "--json"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        _child(args)
        return
    cap = args.cap_mb * 2**20
    if "capped" in args.skip:
        args.capped_size = None
    elif args.capped_size is None:
        args.capped_size = math.ceil((4 * cap / 4) ** (1 / 3))
    args.capped_memory_mb = max(args.cap_mb // 3, 8)

    with tempfile.TemporaryDirectory(prefix="sun-bench-") as folder:
        tmp = Path(folder)
        files = _prepare(args, tmp)
        voxels = args.size**3
        io_bytes = voxels * (4 + OUTPUT_BYTES_PER_VOXEL)
        print(f"SUN inference benchmark: {args.size}^3 float32 implant phantom, U-Net depth {args.depth} width {args.width}, "
              f"{args.device} ({args.threads} threads, {os.cpu_count()} CPUs), memory budget {args.memory_mb} MiB (zarr9: {args.zarr_memory_mb} MiB)")  # fmt: skip
        print(f"input + output = {_mib(voxels * 4)} + {_mib(voxels * OUTPUT_BYTES_PER_VOXEL)} = {_mib(io_bytes)} "
              f"(labels u8, probabilities f16 x{CLASSES}, entropy f16, disagreement f16)\n")  # fmt: skip
        results = {}
        for case in ("mem3", "mem9", "zarr9", "naive9"):
            if case not in args.skip:
                results[case] = _run_case(case, args, files)
        header = (f"{'case':8} {'axes':>4} {'wall s':>7} {'Mvox/s':>7} {'net s':>7} {'samp s':>7} {'vote s':>7} {'(s+v)/net':>9} "
                  f"{'peak RSS':>10} {'growth':>10} {'growth/IO':>9} {'peak/IO':>7}")  # fmt: skip
        print(header)
        print("-" * len(header))
        for case, r in results.items():
            growth = r["max_rss"] - r["baseline_rss"]
            fusion = r["fusion_seconds"] + r["sampling_seconds"]
            print(
                f"{case:8} {case[-1]:>4} {r['seconds']:7.1f} {voxels / r['seconds'] / 1e6:7.2f} {r['network_seconds']:7.1f} {r['sampling_seconds']:7.1f} "
                f"{r['fusion_seconds']:7.1f} {fusion / r['network_seconds']:9.1%} {_mib(r['max_rss']):>10} {_mib(growth):>10} {growth / io_bytes:9.2f} "
                f"{r['max_rss'] / io_bytes:7.2f}"
            )
        print()
        if results:
            # The runtime (torch, numba) is resident before any input is read; no input size
            # changes it, so the absolute goal can only hold above some input + output size.
            floor = min(r["baseline_rss"] for r in results.values())
            print(
                f"runtime before the input is read: {_mib(floor)} = {floor / io_bytes:.2f}x input + output"
            )
            for case in ("mem9", "zarr9", "mem3"):
                if case in results:
                    r = results[case]
                    slope = (r["max_rss"] - r["baseline_rss"]) / io_bytes
                    if slope < 1.2:
                        least = r["baseline_rss"] / (1.2 - slope)
                        print(f"with {case}'s growth of {slope:.2f}x, absolute peak RSS <= 1.2x input + output from about "
                              f"{_mib(least)} of input + output on ({(least / (4 + OUTPUT_BYTES_PER_VOXEL)) ** (1 / 3):.0f}^3 voxels)")  # fmt: skip
                    break
            print()
        verdicts = []
        if "mem9" in results:
            r = results["mem9"]
            fraction = r["achieved_flops"] / r["peak_flops"]
            print(f"convolutions (mem9): {r['conv_flops_per_pixel'] / 1e3:.1f} kFLOP/pixel; achieved {r['achieved_flops'] / 1e9:.2f} GFLOP/s "
                  f"over network time, plain batched convolutions of the same shapes {r['peak_flops'] / 1e9:.2f} GFLOP/s -> {fraction:.0%}")  # fmt: skip
            verdicts.append(
                ("conv FLOP/s >= 50% of measured peak", fraction >= 0.5, f"{fraction:.0%}")
            )
        for case in ("mem3", "mem9", "zarr9"):
            if case in results:
                r = results[case]
                overhead = (r["fusion_seconds"] + r["sampling_seconds"]) / r["network_seconds"]
                verdicts.append(
                    (
                        f"fusion overhead <= 10% of network time ({case})",
                        overhead <= 0.1,
                        f"{overhead:.1%}",
                    )
                )
        for case in ("mem9", "zarr9"):
            if case in results:
                r = results[case]
                growth = r["max_rss"] - r["baseline_rss"]
                verdicts.append(
                    (
                        f"peak RSS <= 1.2 x (input+output) ({case}, absolute)",
                        r["max_rss"] <= 1.2 * io_bytes,
                        f"{r['max_rss'] / io_bytes:.2f}x",
                    )
                )
                verdicts.append(
                    (
                        f"RSS growth <= 1.2 x (input+output) ({case})",
                        growth <= 1.2 * io_bytes,
                        f"{growth / io_bytes:.2f}x",
                    )
                )
                if "naive9" in results:
                    naive = results["naive9"]
                    ratio = r["max_rss"] / naive["max_rss"]
                    growth_ratio = growth / (naive["max_rss"] - naive["baseline_rss"])
                    verdicts.append(
                        (
                            f"peak RSS <= 1/5 of naive ({case}, absolute)",
                            ratio <= 0.2,
                            f"{ratio:.2f}",
                        )
                    )
                    verdicts.append(
                        (
                            f"RSS growth <= 1/5 of naive's ({case})",
                            growth_ratio <= 0.2,
                            f"{growth_ratio:.2f}",
                        )
                    )
        if args.capped_size:
            capped_bytes = args.capped_size**3 * 4
            r = _run_case("capped", args, files, cap_bytes=cap)
            if r["killed"]:
                print(f"\ncapped: {args.capped_size}^3 float32 ({_mib(capped_bytes)}) in Zarr, 3 axes, U-Net depth 2 width 4, RSS growth limit {_mib(cap)}: "
                      f"KILLED at {_mib(r['sampled_peak'] - r['baseline_rss'])} growth, exceeded the limit")  # fmt: skip
                verdicts.append(("volume 4x the memory limit via Zarr", False, "exceeded"))
            else:
                growth = r["sampled_peak"] - r["baseline_rss"]
                print(f"\ncapped: {args.capped_size}^3 float32 ({_mib(capped_bytes)} = {capped_bytes / cap:.1f}x the limit) in Zarr, 3 axes, U-Net depth 2 width 4, "
                      f"RSS growth limit {_mib(cap)}: done in {r['seconds']:.0f} s, peak growth {_mib(growth)} (sampled every 10 ms; "
                      f"VmHWM peak {_mib(r['max_rss'] - r['baseline_rss'])}), absolute peak {_mib(r['max_rss'])}")  # fmt: skip
                verdicts.append(
                    (
                        "volume 4x the memory limit via Zarr, within the limit",
                        capped_bytes >= 4 * cap and r["max_rss"] - r["baseline_rss"] <= cap,
                        f"{_mib(r['max_rss'] - r['baseline_rss'])} of {_mib(cap)}",
                    )
                )
        print("\ngoals:")
        for text, ok, value in verdicts:
            print(f"  [{'met' if ok else 'NOT met':7}] {text}: {value}")


if __name__ == "__main__":
    main()
