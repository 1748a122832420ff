"""SIGKILL ``mdlma sun predict`` and ``mdlma sun train`` at random moments, rerun, compare.

Each command first runs once uninterrupted (the reference). Then the same command is
started again and again and killed with SIGKILL after a random delay, until it has been
killed ``--kills`` times while working (after its work directory or training metrics
appeared); the last start runs to the end. The outputs must be bit-identical to the
reference: every label, probability, entropy and disagreement value of the prediction,
every weight of the trained model.

Tiny data (a 48³ phantom, a depth-2 width-4 U-Net) keeps a run of 25 kills per command
to a few minutes on two cores; most of it is starting Python and torch again.

Usage: ``python benchmarks/sun_kills.py [--kills 25] [--seed 0] [--skip train]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = (48, 48, 48)


def run_killed(
    command: list[str],
    started: Callable[[], bool],
    kills: int,
    rng: random.Random,
    work_seconds: float,
) -> dict:
    """Start ``command`` until it was killed ``kills`` times after ``started()``; then let it finish."""
    killed = starts = 0
    while True:
        starts += 1
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if killed < kills:
            while process.poll() is None and not started():
                time.sleep(0.01)
            # Delays around work_seconds / kills: each start gets a little further on average.
            time.sleep(rng.uniform(0, 2 * work_seconds / kills))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                killed += 1
                continue
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{command[3]} failed after {killed} kills: {err.strip()}")
        return {"kills": killed, "starts": starts}


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def predict_case(folder: Path, model: Path, scan: Path, kills: int, rng: random.Random) -> bool:
    import zarr

    def command(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "unified_framework", "sun", "predict", str(scan), "--model", str(model), "--out", str(out),
            "--probabilities", str(out.with_name(out.stem + "_p.zarr")), "--axes", "9", "--slabs", "2", "--memory", "32",
            "--chunks", "16", "16", "16", "--threads", "2",
        ]  # fmt: skip

    seconds = timed(command(folder / "ref.zarr"))
    out = folder / "killed.zarr"
    plan = folder / ".killed.zarr.sun-work" / "plan.json"
    result = run_killed(command(out), plan.exists, kills, rng, seconds)
    names = ["", "_p", "_entropy", "_disagreement"]
    same = all(
        np.array_equal(
            zarr.open_array(str(folder / f"killed{n}.zarr"), mode="r")[...],
            zarr.open_array(str(folder / f"ref{n}.zarr"), mode="r")[...],
        )
        for n in names
    )
    print(
        f"sun predict: {result['kills']} SIGKILLs while working ({result['starts']} starts), uninterrupted {seconds:.1f} s; outputs bit-identical: {same}"
    )
    return same


def train_case(folder: Path, image: Path, labels: Path, kills: int, rng: random.Random) -> bool:
    import torch

    from unified_framework.sun.model_package import load_model

    def command(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "unified_framework", "sun", "train", "--pair", str(image), str(labels), "--out", str(out),
            "--axes", "z,y+x", "--depth", "2", "--width", "4", "--input-size", "32", "--batch-size", "4", "--steps", "120",
            "--val-every", "20", "--checkpoint-every", "10", "--log-every", "5", "--patience", "0", "--threads", "2",
        ]  # fmt: skip

    seconds = timed(command(folder / "ref.pt"))
    out = folder / "killed.pt"
    result = run_killed(
        command(out), out.with_name(out.name + ".metrics.jsonl").exists, kills, rng, seconds
    )
    reference, resumed = load_model(folder / "ref.pt").state_dict, load_model(out).state_dict
    differences = {
        k: float((resumed[k].double() - v.double()).abs().max())
        for k, v in reference.items()
        if v.is_floating_point()
    }
    same = all(torch.equal(resumed[k], v) for k, v in reference.items())
    metrics = [
        json.loads(line)
        for line in out.with_name(out.name + ".metrics.jsonl").read_text().splitlines()
    ]
    steps = [m["step"] for m in metrics if m["phase"] == "train"]
    print(
        f"sun train: {result['kills']} SIGKILLs while working ({result['starts']} starts), uninterrupted {seconds:.1f} s; "
        f"weights bit-identical: {same} (largest difference {max(differences.values()):.3g}); metric lines once per step: {steps == sorted(set(steps))}"
    )
    return same and steps == sorted(set(steps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=("predict", "train"))
    args = parser.parse_args()

    from unified_framework.data import CLASS_NAMES, make_implant_phantom
    from unified_framework.io import write_volume
    from unified_framework.sun.training import TrainingConfig, train_sun

    rng = random.Random(args.seed)
    ok = True
    with tempfile.TemporaryDirectory(prefix="sun-kills-") as tmp:
        folder = Path(tmp)
        image, labels = make_implant_phantom(SIZE, seed=3)
        write_volume(folder / "scan.zarr", image, spacing=(5.0,) * 3, chunks=16)
        write_volume(folder / "image.tif", image, spacing=(5.0,) * 3)
        write_volume(folder / "labels.tif", labels, spacing=(5.0,) * 3)
        if "predict" not in args.skip:
            config = TrainingConfig(
                axes="9", depth=2, base_width=4, input_size=48, steps=50, val_every=50, patience=0
            )
            model = train_sun(
                [image],
                [labels],
                folder / "model.pt",
                config,
                class_names=CLASS_NAMES,
                voxel_size=(5.0,) * 3,
            ).model_path
            (folder / "predict").mkdir()
            ok &= predict_case(folder / "predict", model, folder / "scan.zarr", args.kills, rng)
        if "train" not in args.skip:
            (folder / "train").mkdir()
            ok &= train_case(
                folder / "train", folder / "image.tif", folder / "labels.tif", args.kills, rng
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
