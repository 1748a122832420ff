"""``mdlma nnunet``: nnU-Net v2 in the framework (export, plan, train, predict, import).

Examples
--------
``mdlma nnunet export --pair scan0.tif labels0.tif --pair scan1.zarr labels1.h5 --id 501 --name Implant --label-names background bone implant layer``
``mdlma nnunet plan --id 501 --configurations 2d 3d_fullres``
``mdlma nnunet train --id 501 --configuration 2d --fold all --epochs 50 --iterations 100``
``mdlma nnunet import ~/mdlma/nnunet/nnUNet_results/Dataset501_Implant/nnUNetTrainerMDLMA__nnUNetPlans__2d --out models/implant-2d``
``mdlma nnunet predict scan.tif --model models/implant-2d --out seg.zarr --probabilities prob.zarr``
``mdlma nnunet predict scan.tif --model models/implant-2d --out seg.zarr --axes 9``
``mdlma nnunet paths``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "nnunet",
        help="nnU-Net v2: export a dataset, plan, train, predict, import a trained model",
        description=(
            "nnU-Net v2 on the user's data through nnU-Net's own commands and trainers. The nnUNet_raw, "
            "nnUNet_preprocessed and nnUNet_results folders come from the configuration ([nnunet], "
            "default below <home>/nnunet). See docs/nnunet.md."
        ),
    )
    actions = parser.add_subparsers(dest="nnunet_action", metavar="ACTION")
    actions.required = True

    paths = actions.add_parser("paths", help="show the nnU-Net folders in use")
    paths.set_defaults(func=_paths)

    export = actions.add_parser(
        "export",
        help="volumes + labels (any format) -> an nnUNet_raw dataset",
        description="Write DatasetXXX_NAME in nnUNet_raw (NIfTI, spacing kept) with dataset.json.",
    )
    export.add_argument(
        "--pair",
        nargs=2,
        action="append",
        required=True,
        metavar=("IMAGES", "LABELS"),
        help="a training case: image file (several channels: comma-separated files) and its labels (repeatable)",
    )
    export.add_argument(
        "--test", action="append", default=[], metavar="IMAGES", help="a test case (imagesTs)"
    )
    export.add_argument("--id", type=int, required=True, dest="dataset_id", help="1 .. 999")
    export.add_argument("--name", required=True, help="dataset name (letters, digits, _ -)")
    export.add_argument(
        "--channel-names", nargs="+", metavar="NAME", help="one per channel (default CT)"
    )
    export.add_argument(
        "--label-names", nargs="+", metavar="NAME", help="one per class 0 .. n-1 (default found)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace the same dataset")
    export.set_defaults(func=_export)

    plan = actions.add_parser("plan", help="nnU-Net's plan and preprocess")
    plan.add_argument("--id", type=int, required=True, dest="dataset_id")
    plan.add_argument(
        "--configurations", nargs="+", default=["2d", "3d_fullres"], metavar="CONFIGURATION"
    )
    plan.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    plan.add_argument("--log", type=Path, help="write nnU-Net's output here")
    plan.set_defaults(func=_plan)

    train = actions.add_parser(
        "train",
        help="train one fold of one configuration (nnUNetv2_train)",
        description="Trainer nnUNetTrainerMDLMA: nnU-Net's default with --epochs and --iterations per epoch.",
    )
    train.add_argument("--id", type=int, required=True, dest="dataset_id")
    train.add_argument("--configuration", default="2d", help="2d (default), 3d_fullres, 3d_lowres")
    train.add_argument("--fold", default="all", help="0 .. 4 or all (default: all cases)")
    train.add_argument("--epochs", type=int, default=1000, help="default 1000 (nnU-Net's)")
    train.add_argument(
        "--iterations", type=int, default=250, help="iterations per epoch (default 250)"
    )
    train.add_argument("--trainer", help="another nnU-Net trainer by name (its own length)")
    train.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    train.add_argument("--threads", type=int, default=1, help="augmentation workers/threads")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--log", type=Path, help="write nnU-Net's output here")
    train.set_defaults(func=_train)

    predict = actions.add_parser(
        "predict",
        help="segment volumes with a trained nnU-Net model (any output format)",
        description=(
            "nnU-Net's own inference (any configuration), or with --axes a 2d model along SUN's axes, "
            "fused by SUN's soft-voting accumulator (entropy and disagreement written too)."
        ),
    )
    predict.add_argument("volume", nargs="+", type=Path, metavar="VOLUME", help="one per channel")
    predict.add_argument("--model", type=Path, required=True, help="nnU-Net model folder")
    predict.add_argument("--out", type=Path, required=True, help="labels output")
    predict.add_argument("--probabilities", type=Path, metavar="OUT.zarr")
    predict.add_argument("--axes", help="3, 9 or names: 2d model along SUN's axes")
    predict.add_argument("--folds", nargs="+", help="folds to average (default all trained)")
    predict.add_argument("--mirroring", action="store_true", help="test-time mirroring")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--threads", type=int, metavar="N")
    predict.set_defaults(func=_predict)

    imp = actions.add_parser(
        "import",
        help="copy a trained nnU-Net result folder into a model folder for predict/sun/compare",
    )
    imp.add_argument("folder", type=Path, help="<trainer>__<plans>__<configuration> folder")
    imp.add_argument("--out", type=Path, required=True, help="new model folder")
    imp.add_argument("--folds", nargs="+", help="folds to keep (default all trained)")
    imp.add_argument("--checkpoint", default="checkpoint_final.pth")
    imp.set_defaults(func=_import)


def _paths(args: argparse.Namespace) -> int:
    from ..nnunet.paths import nnunet_paths

    p = nnunet_paths()
    print(f"nnUNet_raw          {p.raw}")
    print(f"nnUNet_preprocessed {p.preprocessed}")
    print(f"nnUNet_results      {p.results}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..nnunet.dataset import Case, export_dataset
    from ..nnunet.paths import nnunet_paths

    cases = [
        Case([Path(p) for p in images.split(",")], Path(labels)) for images, labels in args.pair
    ]
    tests = [Case([Path(p) for p in images.split(",")]) for images in args.test]
    result = export_dataset(
        cases,
        nnunet_paths(),
        args.dataset_id,
        args.name,
        channel_names=args.channel_names,
        label_names=args.label_names,
        test_cases=tests,
        overwrite=args.overwrite,
        progress=True,
    )
    print(f"wrote {result.folder} ({len(result.cases)} cases)")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ..nnunet.paths import nnunet_paths
    from ..nnunet.run import plan_and_preprocess

    folder = plan_and_preprocess(
        nnunet_paths(), args.dataset_id, args.configurations, threads=args.threads, log=args.log
    )
    print(f"planned and preprocessed {folder}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..nnunet.paths import nnunet_paths
    from ..nnunet.run import train

    folder = train(
        nnunet_paths(),
        args.dataset_id,
        args.configuration,
        args.fold,
        epochs=args.epochs,
        iterations=args.iterations,
        trainer=args.trainer,
        device=args.device,
        threads=args.threads,
        resume=args.resume,
        log=args.log,
    )
    print(f"trained {folder / ('fold_' + str(args.fold))}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..nnunet.predict import predict_files

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = predict_files(
        args.volume,
        args.model,
        args.out,
        probabilities_out=args.probabilities,
        axes=args.axes,
        folds=args.folds,
        device=args.device,
        mirroring=args.mirroring,
        progress=True,
    )
    for path in result["written"]:
        print(f"wrote {path}")
    print(f"predicted in {result['seconds']:.1f} s")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..nnunet.model import import_model

    out = import_model(args.folder, args.out, args.folds, args.checkpoint)
    print(f"imported {args.folder} as {out}")
    return 0
