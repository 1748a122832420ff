"""Parameter search: trials/s with 1 and 2 dask workers, overhead per trial, best Dice vs trials.

One run on the implant phantom (a slab of slices with ground truth) and a
denoise -> multi-Otsu -> clean-up pipeline:

* a random search of ``--trials`` trials on a dask LocalCluster with 1 and with 2
  workers: trials/s and parallel efficiency (goal >= 80 % on a 2-core machine);
* the overhead of the search per trial (sampler, dask, study folder) against running
  and scoring the pipeline directly (goal <= 10 %);
* the best Dice found by random and TPE search after 10, 25, 50, ... trials, next to
  multi-Otsu with its default parameters (no smoothing, 4 classes).

Trials/s count the trials after the workers have started and loaded the images
(the start-up, a few seconds, is printed apart). The machine's load
(``os.getloadavg``) is printed: on a shared machine the figures measure what the
other processes left.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/search_scaling.py --trials 200
    OMP_NUM_THREADS=1 python benchmarks/search_scaling.py --scaling-only   # 1 vs 2 workers only
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

PIPELINE = {
    "name": "smooth-otsu-clean",
    "steps": [
        {
            "step": "denoise.gaussian",
            "name": "smooth",
            "params": {"sigma": {"low": 0.2, "high": 3.0, "log": True}},
        },
        {
            "step": "segment.multi-otsu",
            "name": "otsu",
            "params": {"classes": {"choices": [3, 4, 5, 6]}},
        },
        {
            "step": "post.remove-small",
            "name": "clean",
            "params": {"min_size": {"low": 0, "high": 64}},
        },
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 96, 96])
    parser.add_argument("--tpe-trials", type=int, default=100)
    parser.add_argument(
        "--scaling-only",
        action="store_true",
        help="only the random search with 1 and 2 workers (trials/s, parallel efficiency)",
    )
    args = parser.parse_args()

    from unified_framework.classical import majority_order, multi_otsu, relabel
    from unified_framework.data import make_implant_phantom
    from unified_framework.io import write_volume
    from unified_framework.metrics import score_volumes
    from unified_framework.search import evaluate_trial, load_pipeline, load_trials, run_search

    print(f"load before: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    image, truth = make_implant_phantom(tuple(args.shape), seed=5)
    write_volume(work / "img.tif", image)
    write_volume(work / "gt.tif", truth)
    (work / "pipe.yml").write_text(yaml.safe_dump(PIPELINE))
    data = [[str(work / "img.tif"), str(work / "gt.tif")]]

    if args.scaling_only:
        rates, startups = scaling(work, data, args.trials)
        efficiency = rates[2] / (2 * rates[1]) if rates[1] else float("nan")
        print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
        print(f"{'figure':44s} {'goal':>10s} {'measured':>12s}")
        for workers in (1, 2):
            print(
                f"{f'trials/s, {workers} dask worker(s)':44s} {'':>10s} {rates[workers]:12.2f}"
                f"   (start-up {startups[workers]:.1f} s)"
            )
        print(f"{'parallel efficiency, 2 workers':44s} {'>= 80 %':>10s} {100 * efficiency:11.0f} %")
        return

    # Baseline: multi-Otsu, defaults, classes mapped by majority vote (as the trials are).
    labels = multi_otsu(image, classes=4)
    mapped = relabel(labels, majority_order(labels, truth, 4))
    table = score_volumes(mapped, truth, labels=[1, 2, 3], surface=False)
    baseline = float(np.nanmean(table["dice"]))

    # Direct: the same pipeline and scoring without sampler, dask or study folder.
    pipeline = load_pipeline(PIPELINE)
    rng = np.random.default_rng(0)
    samples = [
        {
            "smooth.sigma": float(np.exp(rng.uniform(np.log(0.2), np.log(3.0)))),
            "otsu.classes": int(rng.choice([3, 4, 5, 6])),
            "clean.min_size": int(rng.integers(0, 65)),
        }
        for _ in range(20)
    ]
    evaluate_trial(pipeline.source, samples[0], data)  # warm the caches and imports
    start = time.perf_counter()
    for params in samples:
        evaluate_trial(pipeline.source, params, data)
    direct = (time.perf_counter() - start) / len(samples)

    start = time.perf_counter()
    inproc = run_search(
        work / "inproc", work / "pipe.yml", data, trials=len(samples), executor="inprocess", seed=1
    )
    in_search = (time.perf_counter() - start) / len(samples)

    rates, startups = scaling(work, data, args.trials)
    tpe = run_search(
        work / "tpe",
        work / "pipe.yml",
        data,
        trials=args.tpe_trials,
        executor="inprocess",
        sampler="tpe",
        seed=7,
    )
    load_tpe = load_trials(work / "tpe")
    load_rand_seq = load_trials(work / "random-2")[: args.tpe_trials]
    del inproc, tpe

    def best_after(trials: list[dict], n: int) -> float:
        scores = [
            t["score"]
            for t in sorted(trials, key=lambda t: t["number"])[:n]
            if t["state"] == "complete"
        ]
        return max(scores) if scores else float("nan")

    efficiency = rates[2] / (2 * rates[1]) if rates[1] else float("nan")
    overhead = in_search / direct - 1
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    print()
    print(f"{'figure':44s} {'goal':>10s} {'measured':>12s}")
    for workers in (1, 2):
        print(
            f"{f'trials/s, {workers} dask worker(s)':44s} {'':>10s} {rates[workers]:12.2f}"
            f"   (start-up {startups[workers]:.1f} s)"
        )
    print(f"{'parallel efficiency, 2 workers':44s} {'>= 80 %':>10s} {100 * efficiency:11.0f} %")
    print(f"{'pipeline + scoring directly, s/trial':44s} {'':>10s} {direct:12.3f}")
    print(f"{'in the search (in process), s/trial':44s} {'':>10s} {in_search:12.3f}")
    print(f"{'search overhead per trial':44s} {'<= 10 %':>10s} {100 * overhead:11.0f} %")
    print(f"{'multi-Otsu default, mean Dice (3 classes)':44s} {'':>10s} {baseline:12.4f}")
    print(
        f"{'best Dice, random search, ' + str(args.trials) + ' trials':44s} {'> default':>10s} {best_after(load_trials(work / 'random-2'), args.trials):12.4f}"
    )
    print()
    print("best Dice after n trials:   n   random     TPE")
    for n in (5, 10, 25, 50, 100, 200):
        if n <= args.tpe_trials:
            print(
                f"{'':28s}{n:3d}   {best_after(load_rand_seq, n):.4f}   {best_after(load_tpe, n):.4f}"
            )


def scaling(work: Path, data: list[list[str]], trials: int) -> tuple[dict, dict]:
    """Trials/s and start-up seconds of a random search with 1 and with 2 dask workers.

    Also prints the CPU seconds per trial of the workers (the trials' own, as their
    records measure them) and of the driver (this process: sampler, SQLite, dask's
    scheduler and client), and from them the efficiency two workers reach when CPU is
    all that limits them on an idle 2-core machine: one worker leaves the driver the
    other core; two share both cores with it, ``worker / (worker + driver)``.
    """
    from unified_framework.search import load_trials, run_search

    rates, startups = {}, {}
    for workers in (1, 2):
        result = run_search(
            work / f"random-{workers}",
            work / "pipe.yml",
            data,
            trials=trials,
            executor="local",
            workers=workers,
            seed=workers,
        )
        driver = result["driver_cpu_s"] / trials
        worker = float(
            np.mean(
                [
                    (t.get("resources") or {}).get("cpu_time_s", 0.0)
                    for t in load_trials(work / f"random-{workers}")
                ]
            )
        )
        rates[workers] = result["trials_per_s"]
        startups[workers] = result["startup_s"]
        print(
            f"{workers} worker(s): CPU s per trial: workers {worker:.3f}, driver {driver:.3f}; "
            f"CPU-bound 2-worker efficiency on an idle 2-core machine: {100 * worker / (worker + driver):.0f} %"
        )
    return rates, startups


if __name__ == "__main__":
    main()
