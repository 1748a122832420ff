"""``mdlma al``: active learning with HRNet: projects (init, query, label, train, status) and simulations.

Examples
--------
``mdlma al init proj --volume scan.tif --classes background bone implant layer --function entropy``
``mdlma al query proj``
``mdlma al label proj 0:z:12 labels_0_z_12.png``
``mdlma al train proj``
``mdlma al status proj``
``mdlma al simulate --pair a.tif a_labels.tif --test-pair t.tif t_labels.tif --out sim --seeds 0 1 2``
``mdlma al simulate ... --function entropy --seed 1`` (one cell, a SLURM array task), then ``mdlma al merge sim``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..active_learning.acquisition import FUNCTIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "al",
        help="active learning with HRNet: projects (init/query/label/train/status), oracle simulations",
        description=(
            "Label few slices, train, let an acquisition function pick the next slices to label. "
            "See docs/active-learning.md."
        ),
    )
    actions = parser.add_subparsers(dest="al_action", metavar="ACTION")
    actions.required = True

    init = actions.add_parser("init", help="create a project folder for a pool of volumes")
    init.add_argument("project", type=Path, help="the project folder (created)")
    init.add_argument(
        "--volume", action="append", required=True, type=Path, help="a pool volume (repeatable)"
    )
    init.add_argument("--classes", nargs="+", required=True, help="class names, background first")
    init.add_argument(
        "--held-out",
        nargs=2,
        action="append",
        default=[],
        metavar=("IMAGE", "LABELS"),
        help="a labelled held-out volume to score each round's model (repeatable)",
    )
    _pool_options(init)
    _training_options(init)
    init.set_defaults(func=_init)

    query = actions.add_parser("query", help="choose the next slices to label (pending queries)")
    query.add_argument("project", type=Path)
    query.add_argument("--function", choices=FUNCTIONS, help="default: the project's")
    query.add_argument("--batch", type=int, help="slices to query (default: the project's)")
    query.add_argument("--force", action="store_true", help="query anew although some are pending")
    _runtime(query)
    query.set_defaults(func=_query)

    label = actions.add_parser("label", help="store the labels of one slice from an image file")
    label.add_argument("project", type=Path)
    label.add_argument("slice", help="volume:axis:index, as mdlma al query prints")
    label.add_argument("labels", type=Path, help="a 2D label image (.png, .tif, .npy) of the slice")
    label.set_defaults(func=_label)

    train = actions.add_parser(
        "train", help="train this round's model on every labelled slice (resumes after a kill)"
    )
    train.add_argument("project", type=Path)
    train.add_argument(
        "--max-steps", type=int, help="stop after N steps of this run (checkpointed; run again)"
    )
    _runtime(train)
    train.set_defaults(func=_train)

    status = actions.add_parser("status", help="labelled slices, pending queries, rounds, Dice")
    status.add_argument("project", type=Path)
    status.add_argument("--json", action="store_true", help="the whole state as JSON")
    status.set_defaults(func=_status)

    simulate = actions.add_parser(
        "simulate",
        help="simulate active learning with ground-truth labels as the oracle (learning curves)",
        description=(
            "Runs every (function, seed) cell, or one with --function/--seed (a SLURM array task; "
            "--cell-index N picks the Nth of 'mdlma al simulate ... --list'), then merges."
        ),
    )
    simulate.add_argument(
        "--pair",
        nargs="+",
        action="extend",
        required=True,
        metavar="IMAGE LABELS",
        help="pool volumes and their labels in turn (repeatable)",
    )
    simulate.add_argument(
        "--test-pair",
        nargs="+",
        action="extend",
        required=True,
        metavar="IMAGE LABELS",
        help="held-out volumes and their labels in turn (repeatable)",
    )
    simulate.add_argument("--out", type=Path, required=True, help="the simulation folder")
    simulate.add_argument("--classes", nargs="+", help="class names (default: class 0, 1, ...)")
    simulate.add_argument(
        "--functions", nargs="+", choices=FUNCTIONS, default=list(FUNCTIONS), metavar="F"
    )
    simulate.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    simulate.add_argument("--function", choices=[*FUNCTIONS, "full"], help="run one cell only")
    simulate.add_argument("--seed", type=int, help="with --function: the cell's seed")
    simulate.add_argument("--cell-index", type=int, help="run the Nth cell only (array task id)")
    simulate.add_argument("--list", action="store_true", help="print the cells and exit")
    simulate.add_argument("--initial", type=int, default=4, help="random slices to start with")
    simulate.add_argument("--max-labelled", type=int, default=32, help="stop at this many slices")
    simulate.add_argument("--axes", default="z")
    _training_options(simulate, with_batch=True)
    _runtime(simulate)
    simulate.set_defaults(func=_simulate)

    merge = actions.add_parser("merge", help="combine simulation cells into learning curves")
    merge.add_argument("out", type=Path, help="the simulation folder")
    merge.add_argument("--no-plot", action="store_true")
    merge.set_defaults(func=_merge)


def _pool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--axes", default="z", help="pool axes: z, 3, 9 or a list (default z)")
    parser.add_argument("--function", choices=FUNCTIONS, default="entropy")
    parser.add_argument("--batch", type=int, default=4, help="slices per round (default 4)")
    parser.add_argument("--mc-samples", type=int, default=8, help="MC dropout passes for BALD")


def _training_options(parser: argparse.ArgumentParser, with_batch: bool = False) -> None:
    if with_batch:
        parser.add_argument("--batch", type=int, default=4, help="slices per round (default 4)")
        parser.add_argument("--mc-samples", type=int, default=8)
    parser.add_argument("--network", choices=["hrnet", "unet"], default="hrnet")
    parser.add_argument("--variant", default="hrnet_w18_small", help="timm HRNet variant")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument(
        "--refine",
        type=int,
        default=16,
        help="channels of HRNet's full-resolution path (default 16; 0: the plain HRNetV2 head)",
    )
    parser.add_argument("--input-size", type=int, default=64, help="training patch side")
    parser.add_argument("--steps", type=int, default=300, help="training steps per round")
    parser.add_argument("--train-batch", type=int, default=8, help="patches per step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--weights", type=Path, help="HRNet backbone weights (a state-dict file); default: random"
    )


def _runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")


def _config(args: argparse.Namespace):
    from ..active_learning.training import RoundConfig

    return RoundConfig(
        network=args.network,
        variant=args.variant,
        dropout=args.dropout,
        refine=args.refine,
        input_size=args.input_size,
        steps=args.steps,
        batch_size=args.train_batch,
        learning_rate=args.lr,
        weights=str(args.weights.resolve()) if args.weights else None,
    )


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _init(args: argparse.Namespace) -> int:
    from ..active_learning.project import Project

    project = Project.create(
        args.project,
        args.volume,
        args.classes,
        axes=args.axes,
        function=args.function,
        batch_size=args.batch,
        config=_config(args),
        held_out=[tuple(p) for p in args.held_out],
        mc_samples=args.mc_samples,
    )
    print(
        f"created {project.folder}: {len(project.pool)} slices along {project.state['axes']}, "
        f"{len(project.class_names)} classes, {project.state['function']} in batches of {project.state['batch_size']}"
    )
    return 0


def _query(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..active_learning.loop import query
    from ..active_learning.project import Project

    _threads(args)
    project = Project(args.project)
    bar = tqdm(desc="scoring the pool", unit="slice", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    picked = query(
        project,
        function=args.function,
        batch_size=args.batch,
        force=args.force,
        device=args.device,
        progress=progress,
    )
    bar.close()
    for sid in picked:
        print(sid.key)
    entry = Project(args.project).rounds[-1]
    if entry.get("uncertainty"):
        u = entry["uncertainty"]
        print(
            f"mean entropy: picked {u['picked_entropy']:.3f}, pool {u['pool_entropy']:.3f}",
            file=sys.stderr,
        )
    return 0


def _label(args: argparse.Namespace) -> int:
    import numpy as np

    from ..active_learning.pool import SliceId
    from ..active_learning.project import Project
    from ..io import read_volume

    project = Project(args.project)
    sid = project.pool.check(SliceId.parse(args.slice))
    if args.labels.suffix == ".npy":
        labels = np.load(args.labels, allow_pickle=False)
    else:
        labels = np.asarray(read_volume(args.labels, expect_ndim=2).data)
    project.save_labels(sid, labels, source=f"file {args.labels.name}")
    print(f"labelled {sid.key} ({len(project.labelled)} slices labelled)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..active_learning.loop import train
    from ..active_learning.project import Project

    _threads(args)
    project = Project(args.project)
    path = train(project, progress=True, max_steps_this_run=args.max_steps, device=args.device)
    last = Project(args.project).rounds[-1]
    dice = last.get("dice")
    print(f"wrote {path} ({last.get('labelled_count')} labelled slices)")
    if dice:
        print(
            "held-out Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in dice.items() if v is not None)
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ..active_learning.project import Project

    project = Project(args.project)
    if args.json:
        print(json.dumps(project.state, indent=1))
        return 0
    print(f"project {project.folder} (owner {project.owner})")
    print(
        f"pool: {len(project.pool)} slices along {project.state['axes']} of {len(project.state['volumes'])} volume(s)"
    )
    print(
        f"labelled: {len(project.labelled)}; pending: {' '.join(s.key for s in project.pending) or '-'}"
    )
    for entry in project.rounds:
        dice = entry.get("dice") or {}
        scores = ", ".join(f"{k} {v:.3f}" for k, v in dice.items() if v is not None)
        print(
            f"round {entry['round']}: {entry.get('function', '-')} queried {len(entry.get('queried', []))}; "
            f"model {entry.get('model') or '-'} on {entry.get('labelled_count', '-')} slices {scores}"
        )
    return 0


def _read_pairs(paths: list[str], option: str) -> tuple[list, list]:
    from ..errors import InputError
    from ..io import read_volume

    if len(paths) % 2:
        raise InputError(f"{option}: {len(paths)} paths; expected image and label volumes in turn")
    images, labels = [], []
    for image, label in zip(paths[::2], paths[1::2]):
        images.append(read_volume(image, expect_ndim=3).data)
        labels.append(read_volume(label, expect_ndim=3).data)
    return images, labels


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from ..active_learning.simulate import cells, merge, run_cell
    from ..errors import InputError

    todo = cells(args.functions, args.seeds)
    if args.list:
        for n, (function, seed) in enumerate(todo):
            print(f"{n:3d}  {function} seed {seed}")
        return 0
    if args.cell_index is not None:
        if not 0 <= args.cell_index < len(todo):
            raise InputError(f"--cell-index {args.cell_index}: expected 0..{len(todo) - 1}")
        todo = [todo[args.cell_index]]
    elif args.function:
        todo = [(args.function, args.seed if args.seed is not None else args.seeds[0])]
    _threads(args)
    images, labels = _read_pairs(args.pair, "--pair")
    test_images, test_labels = _read_pairs(args.test_pair, "--test-pair")
    classes = args.classes or [
        f"class {c}" for c in range(int(max(np.max(lab) for lab in labels)) + 1)
    ]
    for function, seed in todo:
        run_cell(
            images,
            labels,
            test_images,
            test_labels,
            classes,
            args.out,
            function,
            seed,
            axes=args.axes,
            initial=args.initial,
            batch_size=args.batch,
            max_labelled=args.max_labelled,
            config=_config(args),
            mc_samples=args.mc_samples,
            device=args.device,
            progress=print,
        )
    if len(todo) > 1:
        _print_curves(merge(args.out))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ..active_learning.simulate import merge

    result = merge(args.out, plot=not args.no_plot)
    _print_curves(result)
    return 0


def _print_curves(result: dict) -> None:
    full = result.get("full")
    if full:
        print(f"full pool: mean foreground Dice {full['mean_dice']:.3f} ± {full['sd']:.3f}")
    print(f"{'function':10s} {'AUC mean ± sd':>16s}  share at 95 % of full (per seed)")
    for function, entry in result["functions"].items():
        reach = ", ".join(
            "-" if r is None else f"{100 * r:.1f}%" for r in entry["share_at_95"]["per_seed"]
        )
        print(f"{function:10s} {entry['auc']['mean']:.3f} ± {entry['auc']['sd']:.3f}   {reach}")
    if result.get("missing"):
        print("unfinished cells: " + ", ".join(result["missing"]))
