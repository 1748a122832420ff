"""Segmentation methods side by side on implant phantoms: SUN vs nnU-Net 2d / 2d along 9 axes / 3d_fullres.

Generates training and held-out phantoms (same data for every method), runs
``unified_framework.compare.run_comparison`` and prints the table (mean over held-out
phantoms per method and class: Dice, HD95, ASSD, predicted/true volume, train and
predict time, peak RSS, GPU memory) with the training budget of each method, then times
the same nnU-Net 2d model along 9 axes against z only (SUN's predictor, both ways) and
scores both.

    python benchmarks/segmentation_comparison.py --size 128 --train-seeds 0 1 2 --test-seeds 7 8 9 --out cmp128
    python benchmarks/segmentation_comparison.py --size 32 --sun-steps 150 --nnunet-epochs 2   # a quick run
    python benchmarks/segmentation_comparison.py --report-only --out cmp128   # print a finished run again

This is a comparison, not a race: the figures depend on the budgets, which are printed.
Run it alone (``OMP_NUM_THREADS`` = cores); on a shared machine set ``--threads 1``.
Methods that finished are kept in ``OUT/methods``; a rerun with the same ``--out``
skips them (``--redo`` runs them again).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _report(out: Path) -> None:
    payload = json.loads((out / "comparison.json").read_text())
    methods = {m["method"]: m for m in payload["methods"]}
    for name, m in methods.items():
        b = m["budget"]
        print(
            f"{name}: model {m['model']}; budget: SUN depth {b['sun_depth']} width {b['sun_width']} "
            f"{b['sun_steps']} steps of {b['sun_input_size']}^2 | nnU-Net {b['nnunet_epochs']} epochs x "
            f"{b['nnunet_iterations']} iterations, final validation "
            f"{b.get('nnunet_final_validation', True)} | device {b['device']}, {b['threads']} thread(s)"
        )
    print(
        f"{'method':<16} {'class':>5} {'Dice':>6} {'HD95 um':>8} {'ASSD um':>8} {'pred/true':>9} "
        f"{'train s':>8} {'predict s':>9} {'peak RSS MiB':>12} {'GPU MiB':>8}"
    )
    for row in payload["summary"]:
        m = methods[row["method"]]
        gpu = m["gpu_memory_peak_bytes"]
        print(
            f"{row['method']:<16} {row['label']:>5} {row['dice']:>6.3f} {row['hd95']:>8.1f} "
            f"{row['assd']:>8.1f} {row['volume_ratio']:>9.3f} {m['train_seconds'] or 0:>8.0f} "
            f"{m['predict_seconds']:>9.1f} {m['peak_rss_bytes'] / 2**20:>12.0f} "
            f"{(gpu / 2**20 if gpu else 0):>8.0f}"
        )
    axes = out / "nnunet2d_axes.json"
    if axes.exists():
        for row in json.loads(axes.read_text()):
            dice = " ".join(f"{d:.3f}" for d in row["dice"])
            print(
                f"nnU-Net 2d along {row['axes']:>1} (case {row['case']}): {row['seconds']:.1f} s wall, "
                f"{row['cpu_seconds']:.1f} s CPU, Dice per class {dice}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["classical", "sun-9", "sun-3", "nnunet-2d", "nnunet-2d-9axes", "nnunet-3d"],
    )
    parser.add_argument("--sun-steps", type=int, default=300)
    parser.add_argument("--sun-input-size", type=int, default=64)
    parser.add_argument("--nnunet-epochs", type=int, default=2)
    parser.add_argument("--nnunet-iterations", type=int, default=6)
    parser.add_argument(
        "--nnunet-final-validation",
        action="store_true",
        help="keep nnU-Net's final validation pass (re-predicts the training cases)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="keep the results here (default: a temp folder)")
    parser.add_argument("--redo", action="store_true", help="rerun methods already in OUT")
    parser.add_argument("--report-only", action="store_true", help="print OUT's table again")
    args = parser.parse_args()
    if args.report_only:
        _report(args.out)
        return

    import torch

    torch.set_num_threads(args.threads)
    from unified_framework.compare import Budget, merge, run_method
    from unified_framework.data.phantom import make_implant_phantom
    from unified_framework.io import Volume, read_volume, write_volume
    from unified_framework.metrics.report import score_volumes

    out = args.out or Path(tempfile.mkdtemp(prefix="segmentation-comparison-"))
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def phantom(seed: int) -> tuple[str, str]:
        image_path, labels_path = data / f"img{seed}.tif", data / f"lab{seed}.tif"
        if not labels_path.exists():
            image, labels = make_implant_phantom((args.size,) * 3, seed=seed)
            write_volume(image_path, Volume(image, (5.0, 5.0, 5.0)))
            write_volume(labels_path, Volume(labels.astype(np.uint8), (5.0, 5.0, 5.0)))
        return str(image_path), str(labels_path)

    train = [phantom(s) for s in args.train_seeds]
    test = [phantom(s) for s in args.test_seeds]
    budget = Budget(
        sun_steps=args.sun_steps,
        sun_input_size=min(args.sun_input_size, args.size),
        nnunet_epochs=args.nnunet_epochs,
        nnunet_iterations=args.nnunet_iterations,
        nnunet_final_validation=args.nnunet_final_validation,
        device=args.device,
        threads=args.threads,
    )
    started = time.perf_counter()
    for method in args.methods:
        if (out / "methods" / f"{method}.json").exists() and not args.redo:
            print(f"{method}: kept from an earlier run", flush=True)
            continue
        t = time.perf_counter()
        run_method(method, train, test, out, budget)
        print(f"{method}: done in {time.perf_counter() - t:.0f} s", flush=True)
    merge(out)
    print(
        f"phantoms {args.size}^3, train seeds {args.train_seeds}, held-out seeds {args.test_seeds}, "
        f"{args.threads} thread(s), total {time.perf_counter() - started:.0f} s wall"
    )
    model = out / "work" / "models" / "nnunet-2d"
    if model.exists() and not (out / "nnunet2d_axes.json").exists():
        from unified_framework.sun.inference import predict_volume
        from unified_framework.sun.slice_model import load_slice_model

        slice_model = load_slice_model(model)
        image = read_volume(test[0][0]).data
        truth = read_volume(test[0][1]).data
        spacing = (5.0, 5.0, 5.0)
        predictor = slice_model.slice_predictor(args.device)
        rows = []
        for axes in ("z", "9"):
            t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            labels = predict_volume(slice_model, image, axes=axes, predictor=predictor).labels
            c2 = resource.getrusage(resource.RUSAGE_SELF)
            seconds = time.perf_counter() - t
            table = score_volumes(labels, truth, spacing=spacing)
            rows.append(
                {
                    "axes": axes,
                    "case": test[0][0],
                    "seconds": seconds,
                    "cpu_seconds": (c2.ru_utime + c2.ru_stime) - (c.ru_utime + c.ru_stime),
                    "dice": [float(r["dice"]) for r in table.to_dict("records") if r["label"]],
                }
            )
        (out / "nnunet2d_axes.json").write_text(json.dumps(rows, indent=2))
    _report(out)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
