"""Degradation-analysis benchmark: accuracy against analytic truth, local-thickness agreement, time and memory.

1. **Accuracy.** Analytic degrading cylinders (``make_degrading_cylinder``: exact
   volumes, surface areas, layer thickness, BIC, shell BV/TV, depth) with layers of 4,
   6, 8 and 12 voxels, isotropic and anisotropic voxels, at sub-voxel offsets. Printed:
   the relative error of every quantity (shell BV/TV: absolute) next to the goals
   (<= 2 % volumes, <= 5 % mean thickness and BIC at >= 4 voxels).
2. **Local thickness vs a reference.** The framework's porespy-based map (sphere radii
   = every distinct distance value, ``method="legacy"``) against a direct
   implementation of the Hildebrand-Rüegsegger definition written here (every voxel's
   sphere of radius = its distance value, inserted by ``scipy.ndimage.binary_dilation``
   with a ball footprint, maximum over spheres) and against porespy's integer-radius
   ``bf`` method: share of identical voxels and mean absolute difference, on the
   screw phantom's degradation layer.
3. **Time and peak RSS** of all quantities (``quantify`` with 10 shells of 50 µm, the
   initial cylinder, thickness, BIC, surfaces, fragments) on an N³ label volume (default
   512³, the analytic cylinder, 5 µm voxels), in a fresh subprocess limited to
   ``--threads`` threads; peak RSS against the label volume's size (goal: 60 s on 2
   cores, 3x the label volume).
4. **Screw fit.** The analytic degrading screw (``make_degrading_screw``: known pitch,
   core radius, thread depth), isotropic and anisotropic voxels, undegraded and degraded
   by 15 µm: the fitted pitch, core radius and thread depth against the truth, and the
   degraded fraction and depth with the fitted screw (nominal major radius) against
   the truth and against the exact initial screw; a cylinder of the same nominal
   radius for comparison.
5. **Sampled uncertainty.** Label maps drawn from blurred one-hot probabilities of the
   analytic cylinder (blur 0.6 and 1.2 voxels, draws smoothed by 1.5 voxels, 16
   draws): does the 2.5-97.5 % range hold the analytic truth, and does it narrow as
   the probabilities sharpen?

Usage::

    python benchmarks/analysis.py                 # everything, 512^3 timing
    python benchmarks/analysis.py --size 256      # smaller timing volume
    python benchmarks/analysis.py --skip time     # accuracy and thickness only
    python benchmarks/analysis.py --skip accuracy thickness screw sampling   # the 512^3 timing only

The machine's load (``uptime``) is printed: timings on a shared machine are upper bounds.
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

VOLUME_KEYS = (
    "residual_volume_mm3",
    "layer_volume_mm3",
    "implant_volume_mm3",
    "initial_volume_mm3",
)
SURFACE_KEYS = ("residual_surface_mm2", "implant_surface_mm2", "initial_surface_mm2")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- the timing child ----------------------------------------------------------------------


def child_time(args) -> None:
    from unified_framework.analysis import quantify

    baseline = _rss_mb()
    labels = np.load(args.labels)
    truth = json.loads(Path(args.truth).read_text())
    loaded = _rss_mb()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    result = quantify(
        labels,
        (5.0, 5.0, 5.0),
        shell_width=50.0,
        shells=10,
        cylinder=True,
        initial_radius=truth["initial_radius_um"],
        days=28,
    )
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime - cpu0,
                "baseline_mb": baseline,
                "loaded_mb": loaded,
                "peak_mb": peak,
                "labels_mb": labels.nbytes / 2**20,
                "values": result.values,
            }
        )
    )


def _warm_imports() -> None:
    # Import what quantify uses so the baseline RSS of the child holds the libraries.
    import edt  # noqa: F401
    import porespy  # noqa: F401
    import skimage.measure  # noqa: F401
    from scipy import ndimage, spatial  # noqa: F401

    # The numba kernel of the bounded distance transform: compiled once (then cached on
    # disk), a fixed cost like an import, not part of the work on the volume.
    from unified_framework.analysis._bounded_edt import _kernel

    _kernel()


# --- accuracy ------------------------------------------------------------------------------


def accuracy() -> list[dict]:
    from unified_framework.analysis import quantify, rasterize_cylinder
    from unified_framework.data.degrading import make_degrading_cylinder

    cases = []
    for layer_vox in (4, 6, 8, 12):
        for offset in (0.0, 0.37):
            cases.append(("iso 5 µm", (16, 192, 192), (5.0, 5.0, 5.0), layer_vox, offset))
    cases.append(("aniso 10x5x5", (8, 192, 192), (10.0, 5.0, 5.0), 6, 0.21))
    cases.append(("aniso 5x4x6", (12, 240, 160), (5.0, 4.0, 6.0), 6, 0.0))
    rows = []
    for name, shape, spacing, layer_vox, offset in cases:
        h = min(spacing)
        labels, truth = make_degrading_cylinder(
            shape,
            spacing,
            layer=layer_vox * max(spacing[1:]),
            shell_width=8 * h,
            fractions=(0.45, 0.3, 0.15),
            shift=(0.0, offset * spacing[1], -offset * spacing[2]),
        )
        initial = rasterize_cylinder(
            truth["cylinder"], shape, spacing, tuple(slice(0, n) for n in shape)
        )
        start = time.perf_counter()
        result = quantify(labels, spacing, shells=3, shell_width=8 * h, initial=initial, days=30)
        wall = time.perf_counter() - start
        v = result.values
        row = {"case": f"{name}, layer {layer_vox} vox, offset {offset}", "wall_s": wall}
        for key in (
            *VOLUME_KEYS,
            *SURFACE_KEYS,
            "layer_thickness_mean_um",
            "bic_percent",
            "degradation_depth_um",
            "equivalent_depth_um",
            "degraded_fraction",
        ):
            t = truth.get(key)
            row[key] = (v[key] - t) / abs(t) if t else None
        row["shell_bv_tv_abs"] = max(
            abs(s["bv_tv"] - t["bv_tv"]) for s, t in zip(result.shells, truth["shells"])
        )
        rows.append(row)
    return rows


# --- local thickness vs a reference ------------------------------------------------------


def reference_thickness(mask: np.ndarray) -> np.ndarray:
    """Hildebrand-Rüegsegger by definition: max over voxels c of 2 dt(c) on the ball |p - c| < dt(c)."""
    from scipy import ndimage

    from unified_framework.analysis.thickness import distance_transform

    dt = distance_transform(mask, (1.0, 1.0, 1.0))
    out = np.zeros(mask.shape, np.float32)
    for radius in np.unique(dt[mask])[::-1]:
        centres = mask & (dt == radius)
        reach = int(np.ceil(radius))
        grid = np.mgrid[-reach : reach + 1, -reach : reach + 1, -reach : reach + 1]
        ball = (grid**2).sum(axis=0) < radius**2
        covered = ndimage.binary_dilation(centres, structure=ball)
        np.maximum(out, np.where(covered, 2 * radius, 0).astype(np.float32), out=out)
    out[~mask] = 0
    return out


def thickness_agreement() -> list[dict]:
    import porespy

    from unified_framework.analysis.thickness import distance_transform, local_thickness
    from unified_framework.data import make_implant_phantom

    porespy.settings.tqdm["disable"] = True
    rows = []
    for shape in ((48, 48, 48), (64, 96, 96)):
        _, labels = make_implant_phantom(shape, seed=1, spacing=(5.0, 5.0, 5.0))
        layer = labels == 3
        start = time.perf_counter()
        ours = local_thickness(layer, (1.0, 1.0, 1.0), convention="bonej", max_radii=10_000)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        ref = reference_thickness(layer)
        t_ref = time.perf_counter() - start
        bf = 2 * porespy.filters.local_thickness(
            layer, dt=distance_transform(layer, (1, 1, 1)), method="bf"
        ).astype(np.float32)
        a, b, c = ours[layer], ref[layer], bf[layer]
        rows.append(
            {
                "shape": shape,
                "layer_voxels": int(layer.sum()),
                "identical_to_reference": float(np.mean(np.isclose(a, b))),
                "mean_abs_diff_vox": float(np.abs(a - b).mean()),
                "mean_ours": float(a.mean()),
                "mean_reference": float(b.mean()),
                "mean_porespy_bf_integer": float(c.mean()),
                "time_ours_s": t_ours,
                "time_reference_s": t_ref,
            }
        )
    return rows


# --- timing at N^3 ------------------------------------------------------------------------


def timing(size: int, threads: int) -> dict:
    from unified_framework.data.degrading import make_degrading_cylinder

    with tempfile.TemporaryDirectory() as tmp:
        labels, truth = make_degrading_cylinder(
            (size, size, size),
            (5.0, 5.0, 5.0),
            layer=40.0,
            shell_width=50.0,
            fractions=(0.4, 0.3, 0.2),
        )
        np.save(Path(tmp) / "labels.npy", labels)
        Path(tmp, "truth.json").write_text(json.dumps(truth))
        del labels
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "NUMBA_NUM_THREADS": str(threads),
        }
        code = (
            "import sys; sys.argv = ['x', '--child', 'time', '--labels', sys.argv[1], '--truth', sys.argv[2]];"
            f"sys.path.insert(0, {str(REPO / 'benchmarks')!r});"
            "import analysis as bench; bench._warm_imports(); bench.main()"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(Path(tmp) / "labels.npy"),
                str(Path(tmp) / "truth.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"timing child failed:\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["truth"] = {
            k: truth[k] for k in ("residual_volume_mm3", "layer_volume_mm3", "bic_percent")
        }
        return out


# --- screw fit ------------------------------------------------------------------------------


def screw_fit() -> list[dict]:
    from unified_framework.analysis import quantify
    from unified_framework.analysis.screw import rasterize_screw
    from unified_framework.data.degrading import make_degrading_screw

    rows = []
    for spacing in ((5.0, 5.0, 5.0), (10.0, 5.0, 5.0)):
        shape = (int(round(240 / spacing[0])), 96, 96)
        for depth in (0.0, 15.0):
            labels, truth = make_degrading_screw(shape, spacing, depth=depth)
            box = tuple(slice(0, n) for n in shape)
            exact = rasterize_screw(truth["screw"], shape, spacing, box)
            ref = quantify(labels, spacing, shells=0, initial=exact).values
            start = time.perf_counter()
            got = quantify(
                labels, spacing, shells=0, screw=True, initial_radius=truth["initial_radius_um"]
            )
            wall = time.perf_counter() - start
            cyl = quantify(
                labels, spacing, shells=0, cylinder=True, initial_radius=truth["initial_radius_um"]
            ).values
            fit, want = got.settings["screw"], truth["screw"]
            rows.append(
                {
                    "case": f"voxels {spacing}, radial depth {depth:g} µm",
                    "wall_s": wall,
                    "pitch_rel": fit["pitch_um"] / want["pitch_um"] - 1,
                    "core_um": fit["fitted_core_radius_um"] - (want["core_radius_um"] - depth),
                    "thread_um": fit["thread_depth_um"] - want["thread_depth_um"],
                    "hand_ok": fit["handedness"] == want["handedness"],
                    "fraction_abs": got.values["degraded_fraction"] - truth["degraded_fraction"],
                    "fraction_cyl_abs": cyl["degraded_fraction"] - truth["degraded_fraction"],
                    "depth_vs_exact_um": got.values["degradation_depth_um"]
                    - ref["degradation_depth_um"],
                    "voxel_um": min(spacing),
                }
            )
    return rows


# --- sampled uncertainty -------------------------------------------------------------------


def sampling() -> list[dict]:
    from scipy import ndimage

    from unified_framework.analysis import quantify
    from unified_framework.analysis.uncertainty import sample_quantities
    from unified_framework.data.degrading import make_degrading_cylinder

    spacing = (5.0, 5.0, 5.0)
    labels, truth = make_degrading_cylinder((8, 112, 112), spacing)
    exact = quantify(labels, spacing, shells=1, shell_width=30).row()
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    rows = []
    for sigma in (0.6, 1.2):
        prob = np.stack([ndimage.gaussian_filter(p, (0, sigma, sigma)) for p in onehot])
        prob /= prob.sum(axis=0)
        start = time.perf_counter()
        s = sample_quantities(
            labels.dtype, spacing, prob, samples=16, seed=0, smooth=1.5, shells=1, shell_width=30
        )
        wall = time.perf_counter() - start
        for key in (
            "residual_volume_mm3",
            "layer_volume_mm3",
            "bic_percent",
            "layer_thickness_mean_um",
        ):
            rows.append(
                {
                    "blur": sigma,
                    "quantity": key,
                    "truth": truth[key],
                    "mean": s["mean"][key],
                    "low": s["low"][key],
                    "high": s["high"][key],
                    "holds": s["low"][key] <= truth[key] <= s["high"][key],
                    "labels": exact[key],
                    "holds_labels": s["low"][key] <= exact[key] <= s["high"][key],
                    "width_rel": (s["high"][key] - s["low"][key]) / abs(truth[key]),
                    "wall_s": wall,
                }
            )
    return rows


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("accuracy", "thickness", "time", "screw", "sampling"),
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "time":
        child_time(args)
        return
    sys.path.insert(0, str(REPO))
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if "accuracy" not in args.skip:
        rows = accuracy()
        print("\n1. Accuracy vs analytic truth (relative error; shells: absolute BV/TV error)")
        keys = (
            *VOLUME_KEYS,
            *SURFACE_KEYS,
            "layer_thickness_mean_um",
            "bic_percent",
            "degradation_depth_um",
            "equivalent_depth_um",
            "degraded_fraction",
        )
        for row in rows:
            print(f"  {row['case']}  ({row['wall_s']:.2f} s)")
            print("    " + ", ".join(f"{k.rsplit('_', 1)[0]} {_pct(row[k])}" for k in keys))
            print(f"    shell BV/TV max abs error {row['shell_bv_tv_abs']:.4f}")
        worst_vol = max(abs(r[k]) for r in rows for k in VOLUME_KEYS if r[k] is not None)
        worst_thk = max(abs(r["layer_thickness_mean_um"]) for r in rows)
        worst_bic = max(abs(r["bic_percent"]) for r in rows)
        print("  goal vs measured (worst case over all cases):")
        print(f"    volumes          <= 2 %   measured {100 * worst_vol:.2f} %")
        print(
            f"    mean thickness   <= 5 %   measured {100 * worst_thk:.2f} %  (layers 4-12 voxels)"
        )
        print(f"    BIC              <= 5 %   measured {100 * worst_bic:.2f} %")
    if "thickness" not in args.skip:
        print("\n2. Local thickness (BoneJ convention 2r, voxels) vs a direct HR reference")
        for row in thickness_agreement():
            print(
                f"  screw phantom {row['shape']}: {row['layer_voxels']} layer voxels, identical "
                f"{100 * row['identical_to_reference']:.2f} %, mean |diff| {row['mean_abs_diff_vox']:.4f} vox; "
                f"mean ours {row['mean_ours']:.3f}, reference {row['mean_reference']:.3f}, "
                f"porespy bf (integer radii) {row['mean_porespy_bf_integer']:.3f}; "
                f"time ours {row['time_ours_s']:.2f} s, reference {row['time_reference_s']:.2f} s"
            )
    if "screw" not in args.skip:
        print("\n4. Screw fit on the analytic degrading screw (nominal major radius given)")
        rows = screw_fit()
        for row in rows:
            v = row["voxel_um"]
            print(
                f"  {row['case']} ({row['wall_s']:.1f} s): pitch {_pct(row['pitch_rel'])}, "
                f"core radius {row['core_um']:+.2f} µm, thread depth {row['thread_um']:+.2f} µm "
                f"(voxel {v:g} µm), hand {'ok' if row['hand_ok'] else 'WRONG'}; degraded fraction "
                f"{row['fraction_abs']:+.4f} (cylinder {row['fraction_cyl_abs']:+.4f}), depth vs exact "
                f"initial screw {row['depth_vs_exact_um']:+.2f} µm"
            )
        print(
            "  goal vs measured: pitch <= 1 %   measured "
            f"{100 * max(abs(r['pitch_rel']) for r in rows):.2f} %; core radius and thread depth <= 1 voxel   "
            f"measured {max(max(abs(r['core_um']), abs(r['thread_um'])) / r['voxel_um'] for r in rows):.2f} voxel"
        )
    if "sampling" not in args.skip:
        print("\n5. Sampled uncertainty (16 draws, smoothed 1.5 voxels) on the analytic cylinder")
        for row in sampling():
            print(
                f"  blur {row['blur']}: {row['quantity']:26s} truth {row['truth']:.5g}  mean {row['mean']:.5g}  "
                f"2.5-97.5 % [{row['low']:.5g}, {row['high']:.5g}]  holds the truth: {row['holds']}, "
                f"the exact labels' value {row['labels']:.5g}: {row['holds_labels']}  "
                f"width {100 * row['width_rel']:.2f} % ({row['wall_s']:.1f} s for 16 draws)"
            )
    if "time" not in args.skip:
        out = timing(args.size, args.threads)
        ratio = (out["peak_mb"] - out["baseline_mb"]) / out["labels_mb"]
        print(
            f"\n3. All quantities on {args.size}^3 ({out['labels_mb']:.0f} MiB labels), {args.threads} threads"
        )
        print(
            f"    time            goal <= 60 s        measured {out['wall_s']:.1f} s wall, {out['cpu_s']:.1f} s CPU (user+sys; the wall time is inflated by the machine's load)"
        )
        print(
            f"    peak RSS        goal <= 3x labels   measured {ratio:.2f}x above the imports "
            f"(peak {out['peak_mb']:.0f} MiB, imports {out['baseline_mb']:.0f} MiB, after loading {out['loaded_mb']:.0f} MiB)"
        )
        v, t = out["values"], out["truth"]
        print(
            f"    check: residual {_pct(v['residual_volume_mm3'] / t['residual_volume_mm3'] - 1)}, "
            f"layer {_pct(v['layer_volume_mm3'] / t['layer_volume_mm3'] - 1)}, BIC {v['bic_percent']:.2f} % (truth {t['bic_percent']:.1f})"
        )
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
