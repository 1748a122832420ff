"""Segmentation methods side by side on implant phantoms: SUN vs nnU-Net 2d / 2d along 9 axes / 3d_fullres.

Generates training and held-out phantoms (same data for every method), runs
``unified_framework.compare.run_comparison`` and prints the table (mean over held-out
phantoms per method and class: Dice, HD95, ASSD, predicted/true volume, train and
predict time, peak RSS) with the training budget of each method, then times the same
nnU-Net 2d model along 9 axes against z only.

    python benchmarks/segmentation_methods.py --size 128 --train-seeds 0 1 2 --test-seeds 7 8 9
    python benchmarks/segmentation_methods.py --size 32 --sun-steps 200 --nnunet-epochs 2   # a quick run

This is a comparison, not a race: the figures depend on the budgets, which are printed.
Run it alone (``OMP_NUM_THREADS`` = cores); on a shared machine set ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


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
    parser.add_argument("--sun-steps", type=int, default=1500)
    parser.add_argument("--sun-input-size", type=int, default=96)
    parser.add_argument("--nnunet-epochs", type=int, default=5)
    parser.add_argument("--nnunet-iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="keep the results here (default: a temp folder)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from unified_framework.compare import Budget, run_comparison
    from unified_framework.data.phantom import make_implant_phantom
    from unified_framework.io import Volume, write_volume

    out = args.out or Path(tempfile.mkdtemp(prefix="segmentation-methods-"))
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def phantom(seed: int) -> tuple[str, str]:
        image, labels = make_implant_phantom((args.size,) * 3, seed=seed)
        write_volume(data / f"img{seed}.tif", Volume(image, (5.0, 5.0, 5.0)))
        write_volume(data / f"lab{seed}.tif", Volume(labels.astype(np.uint8), (5.0, 5.0, 5.0)))
        return str(data / f"img{seed}.tif"), str(data / f"lab{seed}.tif")

    train = [phantom(s) for s in args.train_seeds]
    test = [phantom(s) for s in args.test_seeds]
    budget = Budget(
        sun_steps=args.sun_steps,
        sun_input_size=min(args.sun_input_size, args.size),
        nnunet_epochs=args.nnunet_epochs,
        nnunet_iterations=args.nnunet_iterations,
        threads=args.threads,
    )
    started = time.perf_counter()
    written = run_comparison(train, test, args.methods, out, budget)
    payload = json.loads(written["json"].read_text())
    print(
        f"phantoms {args.size}^3, train seeds {args.train_seeds}, held-out seeds {args.test_seeds}, "
        f"{args.threads} thread(s), total {time.perf_counter() - started:.0f} s"
    )
    print(
        f"budgets: SUN depth {budget.sun_depth} width {budget.sun_width}, {budget.sun_steps} steps of "
        f"{budget.sun_input_size}^2 patches; nnU-Net {budget.nnunet_epochs} epochs x "
        f"{budget.nnunet_iterations} iterations (nnUNetTrainerMDLMA); classical: multi-Otsu"
    )
    methods = {m["method"]: m for m in payload["methods"]}
    print(
        f"{'method':<16} {'class':>5} {'Dice':>6} {'HD95 um':>8} {'ASSD um':>8} {'pred/true':>9} "
        f"{'train s':>8} {'predict s':>9} {'peak RSS MiB':>12}"
    )
    for row in payload["summary"]:
        m = methods[row["method"]]
        print(
            f"{row['method']:<16} {row['label']:>5} {row['dice']:>6.3f} {row['hd95']:>8.1f} {row['assd']:>8.1f} "
            f"{row['volume_ratio']:>9.3f} {m['train_seconds'] or 0:>8.0f} {m['predict_seconds']:>9.1f} "
            f"{m['peak_rss_bytes'] / 2**20:>12.0f}"
        )
    model = out / "work" / "models" / "nnunet-2d"
    if model.exists():
        from unified_framework.io import read_volume
        from unified_framework.sun.inference import predict_volume
        from unified_framework.sun.slice_model import load_slice_model

        slice_model = load_slice_model(model)
        image = read_volume(test[0][0]).data
        predictor = slice_model.slice_predictor("cpu")
        for axes in ("z", "9"):
            t = time.perf_counter()
            predict_volume(slice_model, image, axes=axes, predictor=predictor)
            print(f"nnU-Net 2d along {axes:>1} axis/axes: {time.perf_counter() - t:.1f} s")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
