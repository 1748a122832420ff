"""``mdlma stardist``: StarDist (TensorFlow) nuclei instance segmentation, 2D and 3D.

Examples
--------
``mdlma sample nuclei n0.tif --gt n0_labels.tif --seed 0``
``mdlma stardist train --pair n0.tif n0_labels.tif --pair n1.tif n1_labels.tif --out nuclei-model --epochs 50``
``mdlma stardist predict n2.tif --model nuclei-model --out n2_pred.tif --gt n2_labels.tif``
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stardist",
        help="StarDist nuclei instance segmentation (TensorFlow): train and predict, 2D/3D",
        description="Train StarDist on your images and instance masks (no pre-trained weights are downloaded) and predict. See docs/nnunet.md, TensorFlow.",
    )
    actions = parser.add_subparsers(dest="stardist_action", metavar="ACTION")
    actions.required = True
    train = actions.add_parser("train", help="train a StarDist model on (image, masks) pairs")
    train.add_argument(
        "--pair", nargs=2, action="append", required=True, metavar=("IMAGE", "MASKS")
    )
    train.add_argument(
        "--val-pair", nargs=2, action="append", metavar=("IMAGE", "MASKS"), help="validation"
    )
    train.add_argument("--out", type=Path, required=True, help="new model folder")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--steps", type=int, default=100, help="steps per epoch (default 100)")
    train.add_argument("--rays", type=int, help="rays (default 32 in 2D, 64 in 3D)")
    train.add_argument("--patch", type=int, help="patch side (default 64 2D, 32 3D)")
    train.add_argument("--batch", type=int, default=4)
    train.add_argument("--no-optimize-thresholds", action="store_true")
    train.add_argument("--threads", type=int, metavar="N")
    train.set_defaults(func=_train)
    predict = actions.add_parser("predict", help="instance labels of an image")
    predict.add_argument("image", type=Path)
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--out", type=Path, required=True)
    predict.add_argument("--gt", type=Path, help="score against these instance masks")
    predict.add_argument("--prob-thresh", type=float)
    predict.add_argument("--nms-thresh", type=float)
    predict.add_argument("--threads", type=int, metavar="N")
    predict.set_defaults(func=_predict)


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _read(path: Path):
    from ..io import read_volume

    volume = read_volume(path, grey=True)
    return volume


def _train(args: argparse.Namespace) -> int:
    from ..tf.stardist import train_stardist

    _threads(args)
    images = [_read(Path(i)).data for i, _ in args.pair]
    masks = [_read(Path(m)).data for _, m in args.pair]
    val = args.val_pair or []
    out = train_stardist(
        images,
        masks,
        args.out,
        rays=args.rays,
        epochs=args.epochs,
        steps=args.steps,
        patch=args.patch,
        batch=args.batch,
        val_images=[_read(Path(i)).data for i, _ in val] or None,
        val_masks=[_read(Path(m)).data for _, m in val] or None,
        optimize_thresholds=not args.no_optimize_thresholds,
        sources=[i for i, _ in args.pair],
    )
    print(f"wrote {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..io import Volume, write_volume
    from ..tf.stardist import predict_stardist

    _threads(args)
    volume = _read(args.image)
    labels = predict_stardist(args.model, volume.data, args.prob_thresh, args.nms_thresh)
    write_volume(args.out, Volume(labels, volume.spacing))
    print(f"wrote {args.out}: {int(labels.max())} instances")
    if args.gt is not None:
        from ..metrics.report import score_instances

        table = score_instances(labels, _read(args.gt).data, thresholds=(0.5, 0.75))
        print(table.to_string(index=False))
    return 0
