"""What keeping freed memory mapped (``unified_framework.utils.heap``) does for SUN on the CPU.

Runs each case in a fresh process, with glibc's default allocator settings and inside
``reuse_freed_memory()``, alternately for ``--rounds`` rounds (these machines are noisy:
compare the two columns of one round), and prints the network's time per pixel, its
system time and minor page faults per forward pass, the time and faults of a training
step, and for one whole diagonal axis of ``predict_volume`` the network and total time.

Usage::

    python benchmarks/heap_reuse.py                 # ~3 min on 2 cores
    python benchmarks/heap_reuse.py --rounds 5 --size 192
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time

import numpy as np

SHAPES = ((1, 256, 368), (8, 256, 256), (1, 1024, 1024), (1, 2048, 2048))


def _child(mode: str, size: int, threads: int) -> dict:
    import torch

    import unified_framework.sun.inference.predictor as predictor_module
    from unified_framework.data import CLASS_NAMES, make_implant_phantom
    from unified_framework.sun.model_package import Normalization, SunModel
    from unified_framework.sun.networks import UNet2D, UNetConfig, fold_batch_norm
    from unified_framework.utils.heap import reuse_freed_memory

    torch.set_num_threads(threads)
    if mode == "default":  # predict_volume's loop runs as it did before the heap was kept
        predictor_module.reuse_freed_memory = contextlib.nullcontext
    block = reuse_freed_memory if mode == "reuse" else contextlib.nullcontext
    config = UNetConfig(depth=4, base_width=16, input_size=64)
    torch.manual_seed(0)
    network = fold_batch_norm(UNet2D(config)).to(memory_format=torch.channels_last)
    result: dict = {"network": []}
    with torch.inference_mode(), block():
        for batch, rows, cols in SHAPES:
            x = torch.randn(batch, 1, rows, cols).contiguous(memory_format=torch.channels_last)
            network(x)
            repeats = max(int(8e6 // (batch * rows * cols)), 2)
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(repeats):
                network(x)
            seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            result["network"].append({
                "ns_per_pixel": 1e9 * seconds / (repeats * batch * rows * cols),
                "system_s": (after.ru_stime - before.ru_stime) / repeats,
                "faults": (after.ru_minflt - before.ru_minflt) / repeats,
            })  # fmt: skip
    # A training step of ``mdlma sun train``'s defaults: batch of 8 patches of 128^2.
    torch.manual_seed(0)
    trainee = UNet2D(config)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-3)
    patches, targets = torch.randn(8, 1, 128, 128), torch.randint(0, 4, (8, 128, 128))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(trainee(patches), targets).backward()
        optimizer.step()

    with block():
        for _ in range(3):
            step()
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(30):
            step()
        seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    result["training"] = {
        "ms_per_step": 1000 * seconds / 30,
        "faults": (after.ru_minflt - before.ru_minflt) / 30,
    }
    model = SunModel(
        config,
        UNet2D(config).state_dict(),
        Normalization((0.0,), (1.1,), (0.35,), (0.25,)),
        list(CLASS_NAMES),
        (5.0,) * 3,
        ("z", "y", "x"),
        "float32",
    )
    image, _ = make_implant_phantom((size,) * 3, seed=0)
    predictor_module.predict_volume(
        model, image[:32, :32, :32], "y+x", memory_budget=32 * 2**20
    )  # warm-up
    started = time.perf_counter()
    stats = predictor_module.predict_volume(model, image, "y+x", memory_budget=32 * 2**20).stats
    result["axis"] = {
        "seconds": time.perf_counter() - started,
        "network_seconds": stats.network_seconds,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of both settings (default 3)"
    )
    parser.add_argument(
        "--size", type=int, default=256, help="volume edge of the predict_volume case (default 256)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.size, args.threads)))
        return

    runs: dict[str, list[dict]] = {"default": [], "reuse": []}
    for _ in range(args.rounds):
        for mode in runs:
            command = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--size",
                str(args.size),
                "--threads",
                str(args.threads),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(output.strip().splitlines()[-1]))

    print(
        f"U-Net depth 4 width 16, CPU, {args.threads} threads; glibc defaults vs reuse_freed_memory(), {args.rounds} rounds (fresh process each)\n"
    )
    print(
        f"{'forward pass':>22}  {'ns/pixel default':>17}  {'ns/pixel reuse':>15}  {'ratio':>5}  {'faults default':>14}  {'faults reuse':>12}  {'sys s default':>13}  {'sys s reuse':>11}"
    )
    for i, (batch, rows, cols) in enumerate(SHAPES):
        d = [r["network"][i] for r in runs["default"]]
        k = [r["network"][i] for r in runs["reuse"]]
        ns_d, ns_k = [x["ns_per_pixel"] for x in d], [x["ns_per_pixel"] for x in k]
        print(f"{batch} x {rows} x {cols:<10}  {_span(ns_d):>17}  {_span(ns_k):>15}  {np.median(ns_d) / np.median(ns_k):5.2f}  "
              f"{np.median([x['faults'] for x in d]):14,.0f}  {np.median([x['faults'] for x in k]):12,.0f}  "
              f"{np.median([x['system_s'] for x in d]):13.3f}  {np.median([x['system_s'] for x in k]):11.3f}")  # fmt: skip
    print(
        "\ntraining step (depth 4, width 16, 8 patches of 128^2; ms per step, page faults per step):"
    )
    for mode, results in runs.items():
        print(
            f"  {mode:8} "
            + "   ".join(
                f"{r['training']['ms_per_step']:.0f} ms, {r['training']['faults']:,.0f}"
                for r in results
            )
        )
    print(
        f"\npredict_volume, axis y+x of a {args.size}^3 phantom, 32 MiB budget (network s / total s per round):"
    )
    for mode, results in runs.items():
        print(
            f"  {mode:8} "
            + "   ".join(
                f"{r['axis']['network_seconds']:.1f} / {r['axis']['seconds']:.1f}" for r in results
            )
        )


def _span(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}" if len(values) > 1 else f"{values[0]:.0f}"


if __name__ == "__main__":
    main()
