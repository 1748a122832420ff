"""Active learning on implant phantoms: learning curves of every acquisition function.

Protocol (issue 18): a training pool of >= 3 phantoms and >= 2 held-out phantoms,
>= 3 seeds, 4 random slices to start with, batches of 4; for every acquisition function
the held-out Dice per class against the number of labelled slices, the labelled share at
which each reaches 95 % of the full-pool Dice, the area under each curve, mean ± sd over
seeds. Goals: the best function reaches 95 % of the full-pool Dice with <= 20 % of the
slices, and its area under the curve exceeds random's by more than one sd.

Usage::

    python benchmarks/active_learning.py --out bench-al                   # the protocol's defaults
    python benchmarks/active_learning.py --out bench-al --size 24 48 48 --steps 120 \
        --max-labelled 24 --functions random entropy coreset --seeds 0 1 2

The pool (``--pool-kind mixed``, the default) is made to vary along ``z`` the way real
scans do, because a pool whose slices all look alike cannot show what an acquisition
function is worth (every slice teaches the same). Each volume is the upper part of a
taller implant phantom, cut at a different height, so the screw's shaft, its conical
tip (small implant and layer cross-sections) and bone without any implant fill
different, volume-dependent shares of the slices; and each volume has its own noise
level and its own contrast (a grey-value gain and offset, as between scans). The
settings follow from the seed of the volume alone (:func:`mixed_phantom`) and were
fixed before any learning curve was run; ``--pool-kind uniform`` gives the plain
phantoms (every slice alike). ``--shard K/N`` runs every N-th cell (for parallel
processes writing into the same ``--out``); ``--merge-only`` only merges.

Cells already finished in ``--out`` are reused (a killed run resumes). Prints goals and
measured figures side by side, writes ``OUT/curves.json`` and ``OUT/curves.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified_framework.active_learning.acquisition import FUNCTIONS  # noqa: E402
from unified_framework.active_learning.simulate import FULL, merge, run_cell  # noqa: E402
from unified_framework.active_learning.training import RoundConfig  # noqa: E402
from unified_framework.data import CLASS_NAMES, make_implant_phantom  # noqa: E402


def mixed_phantom(shape: tuple[int, int, int], seed: int):
    """A phantom whose content varies along ``z``: the top part of a taller phantom.

    From the seed: the cut (the kept ``z`` range starts between 30 % and 75 % of the
    taller phantom, whose screw tip runs from 70 % to 85 % and ends there, so 0 % to
    57 % of the slices show the shaft, the rest the tip or no implant), the noise
    (0.02 to 0.08 at the implant's grey value) and the contrast (gain 0.8 to 1.2,
    offset -0.05 to 0.05).
    """
    rng = np.random.default_rng([int(seed), 18])
    start = rng.uniform(0.30, 0.75)
    noise = rng.uniform(0.02, 0.08)
    gain, offset = rng.uniform(0.8, 1.2), rng.uniform(-0.05, 0.05)
    total = int(round(shape[0] / (1 - start)))
    image, labels = make_implant_phantom((total, *shape[1:]), seed=seed, noise=noise)
    image = gain * image[total - shape[0] :] + offset
    return image.astype(np.float32), np.ascontiguousarray(labels[total - shape[0] :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-active-learning"))
    parser.add_argument("--size", type=int, nargs=3, default=[32, 64, 64], metavar=("Z", "Y", "X"))
    parser.add_argument("--pool", type=int, default=3, help="training phantoms (seeds 0..N-1)")
    parser.add_argument("--held-out", type=int, default=2, help="held-out phantoms (seeds 100..)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=FUNCTIONS)
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-labelled", type=int, default=32)
    parser.add_argument("--network", choices=["hrnet", "unet"], default="hrnet")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pool-kind", choices=["mixed", "uniform"], default="mixed")
    parser.add_argument("--refine", type=int, default=16, help="HRNet full-resolution channels")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--shard", default="0/1", help="K/N: run every N-th cell from the K-th")
    parser.add_argument("--merge-only", action="store_true")
    args = parser.parse_args(argv)
    shard, shards = (int(v) for v in args.shard.split("/"))

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    shape = tuple(args.size)
    make = mixed_phantom if args.pool_kind == "mixed" else make_implant_phantom
    pool = [make(shape, seed=s) for s in range(args.pool)]
    held_out = [make(shape, seed=100 + s) for s in range(args.held_out)]
    config = RoundConfig(
        network=args.network,
        steps=args.steps,
        input_size=args.input_size,
        batch_size=args.train_batch,
        learning_rate=args.learning_rate,
        refine=args.refine,
        checkpoint_every=args.steps,  # a cell resumes per round; no mid-round checkpoints
        device=args.device,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    cells = [(FULL, s) for s in args.seeds] + [(f, s) for f in args.functions for s in args.seeds]
    for n, (function, seed) in enumerate(cells):
        if args.merge_only or n % shards != shard:
            continue
        t0 = time.perf_counter()
        run_cell(
            [i for i, _ in pool],
            [lab for _, lab in pool],
            [i for i, _ in held_out],
            [lab for _, lab in held_out],
            CLASS_NAMES,
            args.out,
            function,
            seed,
            initial=args.initial,
            batch_size=args.batch,
            max_labelled=args.max_labelled,
            config=config,
            mc_samples=args.mc_samples,
            device=args.device,
        )
        print(
            f"[{n + 1}/{len(cells)}] {function} seed {seed}: {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    if shards > 1 and not args.merge_only:
        print(
            f"shard {args.shard} done: {time.perf_counter() - started:.0f} s wall, "
            f"{time.process_time() - cpu_started:.0f} s CPU"
        )
        return 0
    result = merge(args.out)
    elapsed = time.perf_counter() - started
    slices = shape[0] * args.pool
    print()
    timing = (
        "merged only"
        if args.merge_only
        else f"{elapsed / 60:.1f} min wall, "
        f"{(time.process_time() - cpu_started) / 60:.1f} min CPU this process"
    )
    print(
        f"pool {args.pool_kind} {args.pool} x {shape} ({slices} z slices), held out {args.held_out}, "
        f"seeds {args.seeds}, {args.network} {args.steps} steps/round of {args.train_batch} "
        f"patches of {args.input_size}², {timing}"
    )
    full = result["full"]
    print(f"full-pool mean foreground Dice: {full['mean_dice']:.3f} ± {full['sd']:.3f}")
    print(f"{'function':9s} {'AUC mean ± sd':>15s} {'share at 95 % (mean curve)':>27s}  per seed")
    for function, entry in result["functions"].items():
        reach = entry["share_at_95"]
        mean_curve = reach.get("mean_curve")
        print(
            f"{function:9s} {entry['auc']['mean']:.3f} ± {entry['auc']['sd']:.3f}"
            f" {('-' if mean_curve is None else f'{100 * mean_curve:.1f} %'):>27s}  "
            + ", ".join("-" if r is None else f"{100 * r:.1f} %" for r in reach["per_seed"])
        )
    functions = result["functions"]
    best = max(functions, key=lambda f: functions[f]["auc"]["mean"])
    random = functions.get("random")
    reach_best = [
        e["share_at_95"].get("mean_curve")
        for e in functions.values()
        if e["share_at_95"].get("mean_curve") is not None
    ]
    print()
    print(f"{'goal':58s} measured")
    print(
        f"{'best function reaches 95 % of full-pool Dice at <= 20 %':58s} "
        + (f"{100 * min(reach_best):.1f} %" if reach_best else "not reached within the run")
    )
    if random is not None and best != "random":
        margin = functions[best]["auc"]["mean"] - random["auc"]["mean"]
        sd = max(functions[best]["auc"]["sd"], random["auc"]["sd"])
        print(
            f"{'best AUC > random AUC by more than one sd':58s} "
            f"{best} {functions[best]['auc']['mean']:.3f} vs random {random['auc']['mean']:.3f} "
            f"(difference {margin:+.3f}, sd {sd:.3f}: {'yes' if margin > sd else 'no'})"
        )
    else:
        print(f"{'best AUC > random AUC by more than one sd':58s} no: random has the largest AUC")
    print(f"curves: {args.out / 'curves.json'}, plot: {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
