"""``mdlma infer``: tiled, resumable inference of any model on images larger than memory.

Examples
--------
``mdlma infer model.pt slide.ome.tif --out seg.zarr --workers 2 --flips``
``mdlma infer model.pt scan.h5::/entry/data/data --out seg.zarr --patch 16 128 128 --budget 2048``
``mdlma infer model.pt slide.svs --out seg.zarr --slurm-array 8``  (array + merge job via the ``infer`` template)
``mdlma infer models/implant-3d scan.zarr --out seg.zarr --patch 64 128 128``  (an imported nnU-Net model)
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer",
        help="tiled inference of a model on any image size (2D slides, 3D volumes), resumable, distributed",
        description=(
            "Predict IMAGE with MODEL tile by tile (overlapping tiles blended with a Gaussian), reading the "
            "input lazily and writing an OME-Zarr (labels pyramid '0', '1', ... and 'probabilities'). Memory is "
            "bounded by --budget per process; a killed run resumes from its work folder. See docs/inference.md."
        ),
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL",
        help="SUN model or active-learning HRNet/U-Net (.pt), nnU-Net model folder (mdlma nnunet "
        "import; 2d models go slice by slice through volumes, 3d_fullres by 3D patches), Keras "
        "(.keras), or bioimage.io package",
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="image or volume (TIFF/SVS 'slide.tif::LEVEL', HDF5 'f.h5::/data', Zarr, ...)",
    )
    p.add_argument("--out", type=Path, required=True, help="result Zarr (appears when complete)")
    p.add_argument(
        "--work-dir", type=Path, help="work folder (default OUT.work); a killed run resumes from it"
    )
    p.add_argument(
        "--level", type=int, help="pyramid level of a slide (default 0, full resolution)"
    )
    p.add_argument("--patch", type=int, nargs="+", help="tile size per axis (default: the model's)")
    p.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="fraction of a tile shared with a neighbour (0.5)",
    )
    p.add_argument("--flips", action="store_true", help="test-time augmentation: average all flips")
    p.add_argument(
        "--budget", type=float, default=1024, help="working memory per process in MB (default 1024)"
    )
    p.add_argument(
        "--block",
        type=int,
        nargs="+",
        help="output block (chunk) size (default: the largest that fits)",
    )
    p.add_argument(
        "--tissue",
        choices=("auto", "dark", "bright", "off"),
        default="auto",
        help="skip background tiles by Otsu on a low-resolution level (auto: dark tissue on colour slides)",
    )
    p.add_argument("--no-probabilities", action="store_true", help="store labels only")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=1,
        help="dask LocalCluster worker processes (default 1: here)",
    )
    where.add_argument(
        "--dask-slurm",
        type=int,
        metavar="JOBS",
        help="dask-jobqueue SLURMCluster with this many worker jobs",
    )
    where.add_argument(
        "--slurm-array",
        type=int,
        metavar="N",
        help="submit an N-task SLURM array and a merge job (template infer)",
    )
    p.add_argument("--part", type=int, help=argparse.SUPPRESS)
    p.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--finish", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keep-work", action="store_true", help="keep the work folder after finishing")
    p.set_defaults(func=_infer)


def _settings(args: argparse.Namespace) -> dict:
    return dict(
        level=args.level,
        patch=tuple(args.patch) if args.patch else None,
        overlap=args.overlap,
        flips=args.flips,
        budget=int(args.budget * 2**20),
        tissue=args.tissue,
        probabilities=not args.no_probabilities,
        block=tuple(args.block) if args.block else None,
    )


def _passed_options(args: argparse.Namespace) -> str:
    """The plan-fixing options again, for the array and merge scripts."""
    parts = [f"--overlap {args.overlap}", f"--budget {args.budget:g}", f"--tissue {args.tissue}"]
    if args.level is not None:
        parts.append(f"--level {args.level}")
    if args.patch:
        parts.append("--patch " + " ".join(str(p) for p in args.patch))
    if args.block:
        parts.append("--block " + " ".join(str(b) for b in args.block))
    if args.flips:
        parts.append("--flips")
    if args.no_probabilities:
        parts.append("--no-probabilities")
    return " ".join(parts)


def _infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..errors import InputError
    from ..inference import engine

    out = args.out
    work = args.work_dir or out.with_name(out.name + ".work")
    if out.exists() and not args.finish:
        raise InputError(f"{out}: already exists; choose another --out or remove it")
    if args.finish:
        engine.finish(work, out, keep_work=args.keep_work)
        print(f"wrote {out}")
        return 0
    if args.slurm_array is not None:
        return _submit_array(args, work)
    model = None
    if args.workers <= 1 and not args.dask_slurm:  # opened once, to plan and to predict
        model = engine.load_model_for(args.model, args.image, args.level, args.device)
    plan = engine.prepare(work, args.model, args.image, model, **_settings(args))
    cluster = None
    if args.dask_slurm:
        cluster = _slurm_cluster(args)
    part = args.part or 0
    todo, share = engine.pending_blocks(
        work, model, part=part, parts=args.parts, device=args.device
    )
    print(
        f"{args.image}: {plan.shape} in {share} blocks of {plan.block}, tiles {plan.patch} step {plan.step}, "
        f"batch {plan.batch}; {share - len(todo)} block(s) already done"
    )
    try:
        with tqdm(total=len(todo), unit="block", desc="infer") as bar:
            report = engine.run_blocks(
                work,
                model,
                workers=args.workers,
                part=part,
                parts=args.parts,
                cluster=cluster,
                threads=args.threads,
                device=args.device,
                progress=bar.update,
            )
    finally:
        if cluster is not None:  # its worker jobs would otherwise wait for their time limit
            cluster.close()
    print(
        f"predicted {report.tiles_predicted} tiles in {report.blocks_computed} blocks "
        f"({report.tiles_skipped} of {report.tiles_total} tiles skipped as background) in {report.seconds:.1f} s"
    )
    if args.part is None:
        engine.finish(work, out, keep_work=args.keep_work)
        print(f"wrote {out}")
    return 0


def _slurm_cluster(args: argparse.Namespace):
    """A dask-jobqueue SLURMCluster of ``--dask-slurm`` single-process worker jobs."""
    from dask_jobqueue import SLURMCluster

    # The budget plus the runtime (~0.8 GB of Python/torch); dask's own memory limit is
    # off (it would pause a worker at 80 % of the job's memory, where the budget rules).
    memory = f"{int(args.budget) + 2048}MB"
    cluster = SLURMCluster(
        cores=args.threads,
        processes=1,
        memory=memory,
        worker_extra_args=["--memory-limit", "0"],
        walltime="01:00:00",
        local_directory=str(Path(".").absolute()),
        log_directory=str(Path(".mdlma-jobs", "dask").absolute()),
    )
    cluster.scale(jobs=args.dask_slurm)
    return cluster


def _submit_array(args: argparse.Namespace, work: Path) -> int:
    from .. import hpc
    from ..inference import engine

    if args.slurm_array < 1:
        from ..errors import InputError

        raise InputError(f"--slurm-array {args.slurm_array}: expected at least 1 task")
    # The plan, tissue mask and empty store are made here, once, before the tasks start.
    engine.prepare(work, args.model, args.image, **_settings(args))
    record = hpc.submit(
        "infer",
        {
            "model": str(args.model),
            "image": args.image,
            "out": str(out_abs(args.out)),
            "work_dir": str(out_abs(work)),
            "tasks": args.slurm_array,
            "extra_args": _passed_options(args),
        },
    )
    print(
        f"submitted {' '.join(record.job_ids)} (array of {args.slurm_array} + merge); record {record.path}"
    )
    print(f"follow with: mdlma jobs status {shlex.quote(record.job_ids[0])}")
    return 0


def out_abs(path: Path) -> Path:
    return Path(path).absolute()
