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

Sharded (one process per method, e.g. two at a time on a shared machine; rows computed
in separate processes merge into the one table, on the same data files):

    python benchmarks/segmentation_comparison.py --out cmp128 --method-index 5   # nnunet-3d only
    python benchmarks/segmentation_comparison.py --out cmp128 --method-index 0 1 2 3 4
    python benchmarks/segmentation_comparison.py --out cmp128 --method-index 4   # in two processes:
    python benchmarks/segmentation_comparison.py --out cmp128 --method-index 4   # they share its cases
    python benchmarks/segmentation_comparison.py --out cmp128 --merge-only   # the one table

This is a comparison, not a race: the figures depend on the budgets, which are printed.
Run it alone (``OMP_NUM_THREADS`` = cores); on a shared machine set ``--threads 1``.
Methods that finished are kept in ``OUT/methods``; a rerun with the same ``--out``
skips them (``--redo`` runs them again). Every process plans the nnU-Net
configurations of all ``--methods`` together (``run_method(..., methods=...)``), so a
shard never re-plans the dataset while another one trains.

The 9-axes-vs-``z`` timing compares, on the same nnU-Net 2d model and all held-out
cases, the ``nnunet-2d-9axes`` row (SUN's predictor along 9 axes), the ``nnunet-2d`` row
(nnU-Net's own inference, ``z`` slices) and SUN's predictor along ``z`` only (measured
in the merging process; a few CPU seconds per case).
"""

from __future__ import annotations

import argparse
import json
import shutil
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
        f"{'train s':>8} {'train CPU':>9} {'predict s':>9} {'pred CPU':>9} {'peak RSS MiB':>12} "
        f"{'GPU MiB':>8}"
    )
    for row in payload["summary"]:
        m = methods[row["method"]]
        gpu = m["gpu_memory_peak_bytes"]
        print(
            f"{row['method']:<16} {row['label']:>5} {row['dice']:>6.3f} {row['hd95']:>8.1f} "
            f"{row['assd']:>8.1f} {row['volume_ratio']:>9.3f} {m['train_seconds'] or 0:>8.0f} "
            f"{m.get('train_cpu_seconds') or 0:>9.0f} {m['predict_seconds']:>9.1f} "
            f"{m.get('predict_cpu_seconds') or 0:>9.1f} {m['peak_rss_bytes'] / 2**20:>12.0f} "
            f"{(gpu / 2**20 if gpu else 0):>8.0f}"
        )
    axes = out / "nnunet2d_axes.json"
    if axes.exists():
        print("nnU-Net 2d, the same model, all held-out cases (wall / CPU seconds of prediction):")
        for row in json.loads(axes.read_text()):
            dice = " ".join(f"{d:.3f}" for d in row["dice"])
            print(
                f"  {row['how']:<44} {row['seconds']:>8.1f} s wall {row['cpu_seconds']:>8.1f} s CPU, "
                f"mean Dice per class {dice}"
            )


def _axes_timing(out: Path, test: list[tuple[str, str]], device: str) -> None:
    """``nnunet2d_axes.json``: the 2d model along ``z`` (SUN's predictor, timed here) and
    the ``nnunet-2d`` / ``nnunet-2d-9axes`` rows (own inference along z / 9 axes)."""
    import resource

    from unified_framework.io import read_volume
    from unified_framework.metrics.report import score_volumes
    from unified_framework.sun.inference import predict_volume
    from unified_framework.sun.slice_model import load_slice_model

    model = out / "work" / "models" / "nnunet-2d"
    if not model.exists() or (out / "nnunet2d_axes.json").exists():
        return
    slice_model = load_slice_model(model)
    predictor = slice_model.slice_predictor(device)
    seconds = cpu = 0.0
    dice: list[list[float]] = []
    for image_path, labels_path in test:
        image, truth = read_volume(image_path), read_volume(labels_path).data
        t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        labels = predict_volume(slice_model, image.data, axes="z", predictor=predictor).labels
        c2 = resource.getrusage(resource.RUSAGE_SELF)
        seconds += time.perf_counter() - t
        cpu += (c2.ru_utime + c2.ru_stime) - (c.ru_utime + c.ru_stime)
        table = score_volumes(labels, truth, spacing=image.spacing or (5.0, 5.0, 5.0))
        dice.append([float(r["dice"]) for r in table.to_dict("records") if r["label"]])
    rows = [
        {
            "how": "z only, SUN's predictor",
            "seconds": seconds,
            "cpu_seconds": cpu,
            "dice": [float(d) for d in np.mean(dice, axis=0)],
        }
    ]
    for method, how in (
        ("nnunet-2d", "z only, nnU-Net's own inference (nnunet-2d)"),
        ("nnunet-2d-9axes", "9 axes, SUN's predictor (nnunet-2d-9axes)"),
    ):
        path = out / "methods" / f"{method}.json"
        if path.exists():
            r = json.loads(path.read_text())
            per_class: dict[int, list[float]] = {}
            for row in r["rows"]:
                per_class.setdefault(int(row["label"]), []).append(float(row["dice"]))
            rows.append(
                {
                    "how": how,
                    "seconds": r["predict_seconds"],
                    "cpu_seconds": r.get("predict_cpu_seconds") or float("nan"),
                    "dice": [float(np.mean(per_class[k])) for k in sorted(per_class)],
                }
            )
    (out / "nnunet2d_axes.json").write_text(json.dumps(rows, indent=2))


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
    parser.add_argument(
        "--method-index",
        type=int,
        nargs="+",
        metavar="I",
        help="run only these of --methods (0-based; one shard), no merge: rows of several "
        "shards on the same --out merge into one table (--merge-only)",
    )
    parser.add_argument(
        "--merge-only", action="store_true", help="merge OUT/methods/*.json into the one table"
    )
    args = parser.parse_args()
    if args.report_only:
        _report(args.out)
        return

    import torch

    torch.set_num_threads(args.threads)
    from unified_framework.compare import Budget, merge, run_method
    from unified_framework.data.phantom import make_implant_phantom
    from unified_framework.io import Volume, write_volume

    if args.method_index and not all(0 <= i < len(args.methods) for i in args.method_index):
        parser.error(f"--method-index: expected 0 .. {len(args.methods) - 1}")
    if (args.method_index or args.merge_only) and args.out is None:
        parser.error("--method-index and --merge-only need --out (the shards' shared folder)")
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
    chosen = (
        [args.methods[i] for i in args.method_index] if args.method_index else list(args.methods)
    )
    for method in [] if args.merge_only else chosen:
        if (out / "methods" / f"{method}.json").exists() and not args.redo:
            print(f"{method}: kept from an earlier run", flush=True)
            continue
        if args.redo:  # the held-out cases' records too (run_method keeps finished cases)
            shutil.rmtree(out / "predictions" / method, ignore_errors=True)
        t = time.perf_counter()
        # methods=args.methods: nnU-Net configurations of every method are planned together.
        run_method(method, train, test, out, budget, methods=args.methods)
        print(f"{method}: done in {time.perf_counter() - t:.0f} s", flush=True)
    print(
        f"phantoms {args.size}^3, train seeds {args.train_seeds}, held-out seeds {args.test_seeds}, "
        f"{args.threads} thread(s), {time.perf_counter() - started:.0f} s wall in this process"
    )
    if args.method_index:
        return  # a shard: --merge-only makes the table
    merge(out)
    _axes_timing(out, test, args.device)
    _report(out)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
