"""``mdlma search``: hyper-parameter search over pipelines, scored against ground truth.

Examples
--------
``mdlma search run pipeline.yml --data img.tif gt.tif --trials 50 --study study/ --workers 2``
``mdlma search run --study study/ --trials 100``  (resume, or run more)
``mdlma search status study/``
``mdlma search best study/ --top 5``
``mdlma search export study/ --out best.yml``
``mdlma search apply best.yml other.tif --out labels.tif``
"""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from ..utils.text import printable


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="hyper-parameter search over denoise/segment/clean-up pipelines (optuna, dask, SLURM)",
        description="Random, grid or TPE search over the parameters of a YAML pipeline; each trial runs the "
        "pipeline on the training images and is scored against their ground truth. Results live in a "
        "resumable study folder (see docs/search.md).",
    )
    verbs = parser.add_subparsers(dest="search_verb", metavar="ACTION")
    verbs.required = True

    run = verbs.add_parser("run", help="start or resume a search")
    run.add_argument("pipeline", nargs="?", help="pipeline YAML (not needed to resume)")
    run.add_argument("--study", required=True, help="study folder (resumed when it exists)")
    run.add_argument(
        "--data",
        nargs="+",
        action="append",
        metavar="IMAGE TRUTH",
        help="a training image and its ground-truth labels (repeatable)",
    )
    run.add_argument("--trials", type=int, default=20, help="trials in total (default 20)")
    run.add_argument("--sampler", choices=["random", "grid", "tpe"], default="random")
    run.add_argument(
        "--executor",
        default="local",
        help="inprocess, local (dask LocalCluster, default), slurm (dask-jobqueue) or a dask scheduler address",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="trials in parallel (default: all cores; slurm: 2 jobs)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--grid-points", type=int, default=5, help="values per range in a grid search")
    run.add_argument("--hd95", action="store_true", help="also compute HD95 per class (slower)")
    run.add_argument(
        "--partition", default=None, help="slurm executor: partition of the worker jobs"
    )
    run.add_argument(
        "--mem", default="2G", help="slurm executor: memory per worker job (default 2G)"
    )
    run.add_argument("--time", default="01:00:00", help="slurm executor: time limit per worker job")
    run.set_defaults(func=_run)

    status = verbs.add_parser("status", help="progress of a study")
    status.add_argument("study")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    best = verbs.add_parser("best", help="the best trials of a study")
    best.add_argument("study")
    best.add_argument("--top", type=int, default=5)
    best.set_defaults(func=_best)

    report = verbs.add_parser("report", help="every trial of a study as CSV")
    report.add_argument("study")
    report.add_argument("--out", default=None, help="CSV file (default: print)")
    report.set_defaults(func=_report)

    export = verbs.add_parser(
        "export", help="write the pipeline with the best parameters as constants"
    )
    export.add_argument("study")
    export.add_argument("-o", "--out", required=True, help="pipeline YAML to write")
    export.set_defaults(func=_export)

    apply = verbs.add_parser("apply", help="run a pipeline (e.g. an exported best one) on an image")
    apply.add_argument("pipeline", help="pipeline YAML whose parameters are all constants")
    apply.add_argument("input", help="grey-value image or volume")
    apply.add_argument("-o", "--out", required=True, help="label volume to write")
    apply.add_argument(
        "--set",
        action="append",
        metavar="STEP.PARAM=VALUE",
        help="override a constant, e.g. --set otsu.classes=4 (value read as YAML; repeatable)",
    )
    apply.set_defaults(func=_apply)


def _run(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from ..search import run_search

    executor = args.executor
    workers = args.workers or (2 if executor == "slurm" else (os.cpu_count() or 1))
    if executor not in ("inprocess", "local", "slurm") and "://" not in executor:
        raise InputError(
            f"--executor: expected inprocess, local, slurm or a scheduler address like tcp://host:8786, got {executor!r}",
            field="executor",
        )
    data = args.data or None
    bar = tqdm(total=args.trials, desc="trials", disable=None)
    best = [float("-inf")]

    def progress(result: dict) -> None:
        bar.update()
        if result["state"] == "complete" and result["score"] > best[0]:
            best[0] = result["score"]
            bar.set_postfix(best=f"{best[0]:.4f}")

    try:
        result = run_search(
            args.study,
            args.pipeline,
            data,
            trials=args.trials,
            sampler=args.sampler,
            executor=executor,
            workers=workers,
            seed=args.seed,
            grid_points=args.grid_points,
            surface=args.hd95,
            slurm={"partition": args.partition, "memory": args.mem, "walltime": args.time},
            progress=progress,
        )
    finally:
        bar.close()
    print(
        f"{printable(args.study)}: {result['done']} trials ({result['failed']} failed), {result['new']} new "
        f"at {result['trials_per_s']:.2f} trials/s"
    )
    if result["best"]:
        print(
            f"best: trial {result['best']['number']} score {result['best']['score']:.4f} {json.dumps(result['best']['params'])}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..search import load_trials, open_study

    info = open_study(args.study)
    trials = load_trials(args.study)
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["score"]) if complete else None
    summary = {
        "study": str(args.study),
        "pipeline": info.get("pipeline_file"),
        "sampler": info["sampler"],
        "target": info["trials"],
        "done": len(trials),
        "failed": len(trials) - len(complete),
        "best_score": best["score"] if best else None,
        "best_trial": best["number"] if best else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:11s} {printable(str(value))}")
    return 0


def _best(args: argparse.Namespace) -> int:
    from ..search import best_trials

    for trial in best_trials(args.study, args.top):
        print(
            f"trial {trial['number']:5d}  score {trial['score']:.4f}  {json.dumps(trial['params'])}"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..search import load_trials
    from ..search.landscape import trials_frame
    from ..utils.atomic import write_text_atomic

    frame = trials_frame(load_trials(args.study))
    text = frame.to_csv(index=False)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {printable(args.out)} ({len(frame)} trials)")
    else:
        print(text, end="")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..search import export_best

    export_best(args.study, args.out)
    print(f"wrote {printable(args.out)}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_volume, write_volume
    from ..search import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    if args.set:
        import yaml

        source = dict(pipeline.source)
        steps = [dict(item) for item in source["steps"]]
        names = [step.name for step in pipeline.steps]
        for item in args.set:
            key, sep, text = item.partition("=")
            step_name, dot, param = key.rpartition(".")
            if not sep or not dot or step_name not in names:
                raise InputError(
                    f"--set: expected STEP.PARAM=VALUE with STEP one of {', '.join(names)}, got {item!r}",
                    field="set",
                )
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            target = steps[names.index(step_name)]
            target["params"] = {**(target.get("params") or {}), param: value}
        pipeline = load_pipeline({**source, "steps": steps})
    if pipeline.space:
        raise InputError(
            f"{args.pipeline}: parameters {', '.join(pipeline.space)} are still search spaces; export the best trial first"
        )
    volume = read_volume(args.input, grey=True, allow_nan=False)
    labels = pipeline.run(np.asarray(volume.data), {})
    write_volume(args.out, volume.with_data(labels))
    print(f"wrote {printable(args.out)} {labels.shape}")
    return 0
