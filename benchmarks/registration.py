"""Registration benchmark: affine, SimpleITK B-spline, ANTs SyN, convexAdam, VoxelMorph on phantom pairs.

Every method runs on the same ``make_registration_pair`` pairs (known deformation), each
in a fresh subprocess so that its wall time and peak RSS are its own. Printed per pair
and method: mean and per-class warped-label Dice, mean HD95 (µm), median TRE (voxels),
folding (% of voxels with det J <= 0), wall time and peak RSS. Then the issue's goals:
convexAdam's Dice against ANTs SyN, TRE, folding, speed; multi-modal Dice; VoxelMorph
inference time; and (``--big``) warping a Zarr volume with a field estimated at bin 4
under an RSS measurement.

ANTs (``antspyx``) is a reference only, not a dependency of the framework (it pins
numpy < 2.4 and scipy < 1.16): the benchmark installs it with pip into a venv of its
own, ``--ants-target`` (default ``.mdlma/bench-ants``), the first time and runs SyN
there on ``.npy`` copies of the pair; without network it skips the ANTs rows.

Usage::

    python benchmarks/registration.py                         # 3 pairs at 128^3 (one multi-modal), all methods
    python benchmarks/registration.py --size 64 --skip ants   # quick
    python benchmarks/registration.py --vxm-minutes 10        # VoxelMorph training budget (CPU, other seeds)
    python benchmarks/registration.py --vxm-save vxm.pt       # keep the trained model ...
    python benchmarks/registration.py --vxm-model vxm.pt      # ... and reuse it instead of training
    python benchmarks/registration.py --big 1024              # also warp a 1024^3 Zarr volume from a bin-4 field
    python benchmarks/registration.py --ca-preset package     # convexAdam with the package's own defaults

convexAdam runs its ``fast`` preset by default (``unified_framework.registration.convexadam.PRESETS``):
neither it nor ANTs SyN (``SyNOnly``) runs an affine stage, the pairs have no global misalignment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("affine", "bspline", "ants", "convexadam", "voxelmorph")


# --- the child: one method on one pair ---------------------------------------------------


def _pair(args):
    from unified_framework.data import make_registration_pair

    return make_registration_pair(
        (args.size,) * 3, seed=args.seed, displacement=args.displacement, multimodal=args.multimodal
    )


def _bspline(fixed, moving, spacing):
    """SimpleITK B-spline FFD (control points every 8 voxels, Mattes MI, LBFGSB, 3 levels): the classic free-form deformation."""
    import SimpleITK as sitk

    from unified_framework.registration.fields import grid_image

    f, m = grid_image(fixed, spacing), grid_image(moving, spacing)
    mesh = [
        max(2, int(n * s / (8 * s0)))
        for n, s, s0 in zip(f.GetSize(), f.GetSpacing(), [min(spacing)] * 3)
    ]
    initial = sitk.BSplineTransformInitializer(f, mesh, order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # About 50 000 samples per metric evaluation, whatever the size (10 % at 64³).
    method.SetMetricSamplingPercentage(min(0.1, 5e4 / fixed.size), 0)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=100)
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    # One control-point mesh for all levels (LBFGSB refuses the per-level mesh refinement's scales).
    method.SetInitialTransform(initial, inPlace=True)
    transform = method.Execute(f, m)
    converter = sitk.TransformToDisplacementFieldFilter()
    converter.SetReferenceImage(f)
    field = sitk.GetArrayFromImage(converter.Execute(transform))  # (z, y, x, 3) in (x, y, z)
    return np.ascontiguousarray(np.moveaxis(field, -1, 0)[::-1], dtype=np.float32)


ANTS_SCRIPT = """
import json, sys, time, numpy as np, ants
fixed, moving, spacing = np.load(sys.argv[1]), np.load(sys.argv[2]), [float(v) for v in sys.argv[3].split(",")]
f = ants.from_numpy(np.ascontiguousarray(fixed.transpose(2, 1, 0)), spacing=tuple(spacing[::-1]))
m = ants.from_numpy(np.ascontiguousarray(moving.transpose(2, 1, 0)), spacing=tuple(spacing[::-1]))
tick, cpu = time.perf_counter(), time.process_time()
out = ants.registration(f, m, type_of_transform="SyNOnly")
with open(sys.argv[5], "w") as timing:
    json.dump({"method_s": time.perf_counter() - tick, "method_cpu_s": time.process_time() - cpu}, timing)
warp = ants.image_read(next(t for t in out["fwdtransforms"] if t.endswith((".nii.gz", ".nii")))).numpy()
np.save(sys.argv[4], warp)
"""


def _ants(fixed, moving, spacing, python):
    """ANTs SyN (deformable only: the pairs have no global misalignment) in its own venv; field in our convention.

    Also returns the wall and CPU seconds of ``ants.registration`` alone (no import, no I/O).
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "f.npy", fixed)
        np.save(folder / "m.npy", moving)
        subprocess.run(
            [
                python,
                "-c",
                ANTS_SCRIPT,
                str(folder / "f.npy"),
                str(folder / "m.npy"),
                ",".join(map(str, spacing)),
                str(folder / "w.npy"),
                str(folder / "t.json"),
            ],
            check=True,
        )
        warp = np.load(
            folder / "w.npy"
        )  # (x, y, z, 3), components (x, y, z), physical (ITK convention)
        timing = json.loads((folder / "t.json").read_text())
    return np.ascontiguousarray(
        np.moveaxis(warp.transpose(2, 1, 0, 3), -1, 0)[::-1], dtype=np.float32
    ), timing


def child(args) -> None:
    import torch

    from unified_framework.registration import register_volumes, warp
    from unified_framework.registration.quality import quality_report

    torch.set_num_threads(args.threads)
    # One-time imports out of the timed part, as ANTs' import is out of its: the
    # package and torch.optim.Adam's first use (it imports torch._dynamo, ~1.3 CPU s).
    import torch._dynamo  # noqa: F401

    if args.method == "convexadam":
        from unified_framework.registration.convexadam import _convex_adam_pt

        _convex_adam_pt()
    pair = _pair(args)
    labels = dict(
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
        landmarks=(pair.fixed_points, pair.moving_points),
    )
    started = time.perf_counter()
    extra = {}
    if args.method in ("affine", "convexadam", "voxelmorph"):
        from unified_framework.registration.convexadam import preset

        result = register_volumes(
            pair.fixed,
            pair.moving,
            pair.spacing,
            args.method,
            # VoxelMorph refines an affine pre-alignment (it was trained on such pairs).
            prealign="none" if args.method == "convexadam" else "affine",
            device="cpu",
            model=args.model,
            params=preset(
                args.ca_preset,
                downsample=args.ca_downsample or None,
                **({"selected_niter": args.ca_niter} if args.ca_niter is not None else {}),
                **({"lambda_weight": args.ca_lambda} if args.ca_lambda is not None else {}),
            ),
            **labels,
        )
        report = result.report
        extra["method_s"] = sum(
            report["timings"].get(k, 0.0) for k in ("prealign_s", "deformable_s")
        )
        extra["method_cpu_s"] = sum(
            report["timings"].get(k, 0.0) for k in ("prealign_cpu_s", "deformable_cpu_s")
        )
        if args.method == "voxelmorph":
            from unified_framework.registration.voxelmorph import (
                load_voxelmorph,
                register_voxelmorph,
            )

            model = load_voxelmorph(args.model)
            register_voxelmorph(
                pair.fixed, pair.moving, pair.spacing, model, device="cpu"
            )  # warm-up
            tick = time.perf_counter()
            register_voxelmorph(pair.fixed, pair.moving, pair.spacing, model, device="cpu")
            extra["inference_s"] = time.perf_counter() - tick
        if args.method == "convexadam":
            extra["parameters"] = report["parameters"]
    else:
        if args.method == "bspline":
            tick, cpu = time.perf_counter(), time.process_time()
            field = _bspline(pair.fixed, pair.moving, pair.spacing)
            extra.update(
                method_s=time.perf_counter() - tick, method_cpu_s=time.process_time() - cpu
            )
        else:
            field, timing = _ants(pair.fixed, pair.moving, pair.spacing, args.ants_python)
            extra.update(timing)
        report = quality_report(
            field,
            pair.spacing,
            pair.fixed,
            pair.moving,
            warp(pair.moving, field, pair.spacing),
            pair.fixed_labels,
            pair.moving_labels,
            warp(pair.moving_labels, field, pair.spacing, "nearest"),
            landmarks=labels["landmarks"],
        )
    wall = time.perf_counter() - started
    per_class = {
        k: v["after"]["dice"] if v["after"] else None
        for k, v in report["labels"]["per_class"].items()
    }
    hd95 = [
        v["after"]["hd95_um"]
        for v in report["labels"]["per_class"].values()
        if v["after"] and v["after"]["hd95_um"] is not None
    ]
    print(
        json.dumps(
            {
                "dice": report["labels"]["mean_dice"]["after"],
                "dice_before": report["labels"]["mean_dice"]["before"],
                "dice_per_class": per_class,
                "hd95_um": float(np.mean(hd95)) if hd95 else None,
                "tre_vox": report["landmarks"]["tre_median_voxels"]["after"],
                "tre_before_vox": report["landmarks"]["tre_median_voxels"]["before"],
                "folding_pct": 100 * report["jacobian"]["folding_fraction"],
                "wall_s": wall,
                # CPU seconds of this process and its children (ANTs' own venv): on a
                # shared, loaded machine wall times swing with the load, CPU time hardly.
                "cpu_s": sum(
                    getattr(resource.getrusage(who), field)
                    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                    for field in ("ru_utime", "ru_stime")
                ),
                **extra,
                # ANTs runs in a child process of its own venv: count its peak instead.
                "peak_rss_mb": max(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                )
                / 1024,
            }
        )
    )


# --- the parent ----------------------------------------------------------------------------


def run_child(args, method, seed, multimodal, model=None, ants_python=None) -> dict | None:
    command = (
        [
            sys.executable,
            __file__,
            "--child",
            method,
            "--size",
            str(args.size),
            "--seed",
            str(seed),
            "--displacement",
            str(args.displacement),
            "--threads",
            str(args.threads),
            "--ca-preset",
            args.ca_preset,
        ]
        + (["--ca-niter", str(args.ca_niter)] if args.ca_niter is not None else [])
        + (["--ca-lambda", str(args.ca_lambda)] if args.ca_lambda is not None else [])
        + (["--ca-downsample", str(args.ca_downsample)] if args.ca_downsample else [])
        + (["--multimodal"] if multimodal else [])
        + (["--model", str(model)] if model else [])
    )
    command += ["--ants-python", ants_python] if ants_python else []
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(
            f"  {method} seed {seed}: failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def ants_python(args) -> str | None:
    """Python of a separate venv with antspyx (it pins numpy < 2.4 and scipy < 1.16, unlike the framework)."""
    target = Path(args.ants_target)
    python = target / "bin" / "python"
    if not (target / ".complete").exists():
        print(
            f"installing antspyx into the venv {target} (a reference only, not a framework dependency) ..."
        )
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(target)],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "antspyx"],
                check=True,
                capture_output=True,
            )
        except subprocess.CalledProcessError:
            print("  antspyx could not be installed; skipping ANTs SyN")
            return None
        (target / ".complete").write_text("ok\n")
    return str(python)


def train_vxm(args, folder: Path) -> Path:
    """VoxelMorph trained on other seeds than the test pairs, for at most --vxm-minutes on the CPU."""
    import torch

    from unified_framework.data import make_registration_pair
    from unified_framework.registration import warp
    from unified_framework.registration.affine import register_affine
    from unified_framework.registration.voxelmorph import VoxelMorphConfig, train_voxelmorph

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pairs = []
    # Single-modality pairs only: the NCC loss assumes the grey values correspond.
    for seed in range(100, 108):
        pair = make_registration_pair((args.size,) * 3, seed=seed, displacement=args.displacement)
        # Trained on affine-prealigned pairs, as the benchmark applies it: the network
        # only has to learn the residual, non-linear part.
        affine = register_affine(pair.fixed, pair.moving, pair.spacing)
        pairs.append(
            (
                pair.fixed,
                warp(pair.moving, affine.field(pair.fixed.shape, pair.spacing), pair.spacing),
            )
        )
    path = Path(args.vxm_save) if args.vxm_save else folder / "vxm.pt"
    # Half resolution (a 128³ pair is a 64³ one for the network): ~8x faster to train
    # and apply; four U-Net levels of 16 features (the package's default has five);
    # 32³ patches of the binned pairs, so that a 10-minute CPU budget holds many steps.
    config = VoxelMorphConfig(
        features=[16, 16, 16, 16],
        steps=100_000,
        patch_size=32,  # 32³ binned = 64³ of the pair: many more steps in the budget
        learning_rate=2e-3,
        checkpoint_every=50,
        log_every=50,
        device="cpu",
        downsample=args.vxm_downsample,
    )
    deadline = time.perf_counter() + 60 * args.vxm_minutes
    steps = 0
    while time.perf_counter() < deadline:
        result = train_voxelmorph(pairs, path, config, max_steps_this_run=25)
        steps = result.steps
    print(
        f"VoxelMorph: {steps} training steps in {args.vxm_minutes} min (patches 32^3 at downsample {args.vxm_downsample}, {len(pairs)} pairs)",
        flush=True,
    )
    return path


def big_case(args, folder: Path) -> None:
    """Warp a --big^3 Zarr volume from a field at bin 4 with 'mdlma register apply'; report peak RSS."""
    import dask.array as da

    from unified_framework.io import write_volume
    from unified_framework.registration import save_field

    n = args.big
    volume = folder / "big.zarr"
    data = da.random.RandomState(0).random((n, n, n), chunks=128).astype(np.float32)
    write_volume(volume, data, spacing=(1, 1, 1), chunks=128)
    coarse = n // 4
    rng = np.random.default_rng(0)
    from scipy import ndimage

    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal((coarse,) * 3), 4) for _ in range(3)]
    ).astype(np.float32)
    field *= 8.0 / np.abs(field).max()
    save_field(folder / "field.mha", field, (4.0, 4.0, 4.0))
    started = time.perf_counter()
    command = [
        sys.executable,
        "-c",
        "import resource, sys; from unified_framework.cli.main import main; code = main(sys.argv[1:]); "
        "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(code)",
        "register",
        "apply",
        str(folder / "field.mha"),
        str(volume),
        "--out",
        str(folder / "warped.zarr"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    rss = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("peak_rss_mb")]
    print(
        f"{_uptime()}\nwarp {n}^3 Zarr ({n**3 * 4 / 2**30:.1f} GiB float32) from a bin-4 field: exit {done.returncode}, {wall:.0f} s, "
        f"peak RSS {float(rss[0]) / 1024 if rss else float('nan'):.2f} GiB (goal <= 2 GiB)"
    )


def _uptime() -> str:
    """The machine's load when the figures were taken (shared machines inflate wall times)."""
    try:
        return (
            "uptime: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        )
    except OSError:
        return "uptime: unavailable"


def goals(rows: list[dict]) -> None:
    """The issue's goals next to what was measured, per pair."""

    def find(pair: str, method: str) -> dict | None:
        return next((r for r in rows if r["pair"] == pair and r["method"] == method), None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        "\ngoal                                          pair                   measured          "
    )
    for pair in dict.fromkeys(r["pair"] for r in rows):
        ca, ants, vxm, affine = (
            find(pair, m) for m in ("convexadam", "ants", "voxelmorph", "affine")
        )
        if ca and ants:
            gap = ca["dice"] - ants["dice"]
            print(
                f"{'convexAdam Dice >= ANTs - 0.01':<46}{pair:<23}{ca['dice']:.3f} vs {ants['dice']:.3f} ({gap:+.3f})  {verdict(gap >= -0.01)}"
            )
            # The registration alone (no imports, pair, I/O or quality report).
            ratio = ca["method_s"] / ants["method_s"]
            print(
                f"{'convexAdam wall time <= 1/5 of ANTs SyN':<46}{pair:<23}{ca['method_s']:.1f} s vs {ants['method_s']:.1f} s (1/{1 / ratio:.1f})  {verdict(ratio <= 0.2)}"
            )
            ratio = ca["method_cpu_s"] / ants["method_cpu_s"]
            print(
                f"{'  the same in CPU seconds (load-independent)':<46}{pair:<23}{ca['method_cpu_s']:.1f} s vs {ants['method_cpu_s']:.1f} s (1/{1 / ratio:.1f})  {verdict(ratio <= 0.2)}"
            )
        if ca:
            print(
                f"{'convexAdam median TRE <= 1 voxel':<46}{pair:<23}{ca['tre_vox']:.2f}  {verdict(ca['tre_vox'] <= 1)}"
            )
            print(
                f"{'convexAdam folding < 0.5 %':<46}{pair:<23}{ca['folding_pct']:.3f} %  {verdict(ca['folding_pct'] < 0.5)}"
            )
            if "multi-modal" in pair:
                print(
                    f"{'multi-modal: convexAdam Dice >= 0.85':<46}{pair:<23}{ca['dice']:.3f}  {verdict(ca['dice'] >= 0.85)}"
                )
        if vxm:
            print(
                f"{'VoxelMorph inference <= 2 s per pair (CPU)':<46}{pair:<23}{vxm['inference_s']:.2f} s  {verdict(vxm['inference_s'] <= 2)}"
            )
            if affine:
                print(
                    f"{'VoxelMorph Dice above affine-only':<46}{pair:<23}{vxm['dice']:.3f} vs {affine['dice']:.3f}  {verdict(vxm['dice'] > affine['dice'])}"
                )
    params = next((r.get("parameters") for r in rows if r.get("parameters")), None)
    if params:
        print(f"convexAdam parameters: {params}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--displacement", type=float, default=4.0, help="largest true displacement, voxels"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS)
    parser.add_argument("--vxm-minutes", type=float, default=10.0)
    parser.add_argument(
        "--vxm-model",
        help="use this trained VoxelMorph model instead of training one (made by --vxm-save)",
    )
    parser.add_argument(
        "--vxm-save", help="keep the VoxelMorph model trained here at this path (for --vxm-model)"
    )
    parser.add_argument("--pairs", type=int, default=3, help="how many of the 3 pairs to run")
    parser.add_argument(
        "--vxm-downsample", type=int, default=2, help="VoxelMorph's downsample (default 2)"
    )
    parser.add_argument(
        "--ca-preset",
        default="fast",
        choices=("package", "fast"),
        help="convexAdam's parameter preset (default fast: coarse-to-fine Adam; package: the package's defaults)",
    )
    parser.add_argument(
        "--ca-niter",
        type=int,
        default=None,
        help="convexAdam's Adam iterations (default: the preset's)",
    )
    parser.add_argument(
        "--ca-downsample",
        type=int,
        default=0,
        help="convexAdam's downsample (0: automatic, 2 from 96^3)",
    )
    parser.add_argument(
        "--ca-lambda",
        type=float,
        default=None,
        help="convexAdam's lambda_weight (default: the preset's, 2.5 for fast; the package's is 1.25)",
    )
    parser.add_argument("--ants-target", default=str(REPO / ".mdlma" / "bench-ants"))
    parser.add_argument(
        "--big",
        type=int,
        default=0,
        help="side of the Zarr volume of the large-warp case (0: skip)",
    )
    parser.add_argument("--child", choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multimodal", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--ants-python")
    args = parser.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return

    pairs = [(0, False), (1, False), (2, True)][: args.pairs]
    rows = []
    print(_uptime(), flush=True)
    with tempfile.TemporaryDirectory(prefix="mdlma-bench-reg-") as tmp:
        folder = Path(tmp)
        ants = ants_python(args) if "ants" not in args.skip else None
        model = None
        if "voxelmorph" not in args.skip:
            model = Path(args.vxm_model) if args.vxm_model else train_vxm(args, folder)
        for seed, multimodal in pairs:
            for method in METHODS:
                if method in args.skip or (method == "ants" and ants is None):
                    continue
                result = run_child(
                    args,
                    method,
                    seed,
                    multimodal,
                    model if method == "voxelmorph" else None,
                    ants if method == "ants" else None,
                )
                if result:
                    print(
                        f"  seed {seed} {method}: Dice {result['dice']:.3f}, {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU",
                        flush=True,
                    )
                    rows.append(
                        {
                            "pair": f"seed {seed}{' multi-modal' if multimodal else ''}",
                            "method": method,
                            **result,
                        }
                    )
        print(
            f"\n{args.size}^3 pairs, true displacement up to {args.displacement:g} voxels, {args.threads} threads, CPU"
        )
        print(
            f"{'pair':<22}{'method':<12}{'Dice':>6} {'(before)':>8}  {'per class 1/2/3':<20}{'HD95 µm':>8}{'TRE vox':>8} {'(before)':>8}{'fold %':>8}{'reg s':>7}{'reg CPU':>8}{'wall s':>8}{'CPU s':>8}{'RSS MB':>8}"
        )
        for r in rows:
            classes = "/".join(
                f"{v:.2f}" if v is not None else "-" for v in r["dice_per_class"].values()
            )
            print(
                f"{r['pair']:<22}{r['method']:<12}{r['dice']:>6.3f} {r['dice_before']:>8.3f}  {classes:<20}{r['hd95_um'] or float('nan'):>8.1f}"
                f"{r['tre_vox']:>8.2f} {r['tre_before_vox']:>8.2f}{r['folding_pct']:>8.3f}{r.get('method_s', float('nan')):>7.1f}{r.get('method_cpu_s', float('nan')):>8.1f}{r['wall_s']:>8.1f}{r['cpu_s']:>8.1f}{r['peak_rss_mb']:>8.0f}"
            )
        goals(rows)
        print(_uptime(), flush=True)
        if args.big:
            big_case(args, folder)


if __name__ == "__main__":
    main()
