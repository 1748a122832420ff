"""Speed and agreement of ``unified_framework.metrics`` against reference implementations.

Two 256^3 label volumes (3 classes: an ellipsoidal bone shell, the implant inside it,
small pores) that differ slightly, anisotropic voxels. Prints, per metric, our time, the
reference time, their ratio and the largest difference of the values:

* Dice: scikit-learn ``f1_score`` and SimpleITK ``LabelOverlapMeasuresImageFilter``
* Hausdorff distance: SimpleITK ``HausdorffDistanceImageFilter`` on the label contours
  (``BinaryContour``, the same surface definition as ours)
* HD95 / ASSD: MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance``
  if MONAI is importable (it is not a dependency: e.g. ``pip install --no-deps --target
  /tmp/monai monai`` and ``PYTHONPATH=/tmp/monai``), else surface distances sampled from
  SimpleITK ``SignedMaurerDistanceMap`` of the contours (the usual SimpleITK recipe)

Run: ``.mdlma/venv/bin/python benchmarks/metrics.py [--size 256] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk
from sklearn.metrics import f1_score

from unified_framework.metrics import ResourceMeter, overlap_scores, surface_scores

LABELS = (1, 2, 3)
SPACING = (2.0, 1.0, 1.0)  # z voxels twice as thick, as after binning along the rotation axis


def ellipsoid(shape, centre, radii):
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (x - centre[2]) / radii[2]
    ) ** 2 <= 1


def phantom(size, shift=0.0, grow=0.0, seed=0):
    """Bone shell (1) around an implant (2) with pores (3); ``shift``/``grow`` perturb it."""
    shape = (size, size, size)
    c = np.array(shape) / 2 + shift
    volume = np.zeros(shape, dtype=np.uint8)
    volume[ellipsoid(shape, c, np.array([0.42, 0.40, 0.36]) * np.array(shape) + grow)] = 1
    volume[
        ellipsoid(shape, c + (0, 3, -2), np.array([0.36, 0.10, 0.12]) * np.array(shape) + grow)
    ] = 2
    rng = np.random.default_rng(seed)
    for _ in range(12):
        centre = c + rng.uniform(-0.25, 0.25, 3) * np.array(shape)
        radius = rng.uniform(0.02, 0.05) * size
        volume[ellipsoid(shape, centre, (radius / 2 + grow, radius + grow, radius + grow))] = 3
    return volume


def timed(function, repeats=1):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def sitk_image(array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING[::-1])  # SimpleITK orders axes x, y, z
    return image


def sitk_contours(image, label):
    return sitk.BinaryContour(
        image == label, fullyConnected=False, backgroundValue=0, foregroundValue=1
    )


def sitk_hausdorff(pred_image, gt_image):
    values = []
    for label in LABELS:
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(sitk_contours(pred_image, label), sitk_contours(gt_image, label))
        values.append(f.GetHausdorffDistance())
    return np.array(values)


def sitk_maurer_hd95_assd(pred_image, gt_image):
    hd95, assd = [], []
    for label in LABELS:
        contours = [sitk_contours(pred_image, label), sitk_contours(gt_image, label)]
        directed = []
        for source, target in (contours, contours[::-1]):
            distance = sitk.SignedMaurerDistanceMap(
                target, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
            )
            directed.append(
                np.abs(sitk.GetArrayViewFromImage(distance))[
                    sitk.GetArrayViewFromImage(source).astype(bool)
                ]
            )
        hd95.append(max(np.percentile(d, 95) for d in directed))
        assd.append(np.concatenate(directed).mean())
    return np.array(hd95), np.array(assd)


def monai_surface_metric(pred, gt, metric):
    """MONAI's HD95 (``metric="hd95"``) or symmetric ASSD per class."""
    import warnings

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    def one_hot(volume):
        return torch.from_numpy(np.stack([volume == label for label in LABELS])[None])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of MONAI's own arguments
        if metric == "hd95":
            result = compute_hausdorff_distance(
                one_hot(pred), one_hot(gt), include_background=True, percentile=95, spacing=SPACING
            )
        else:
            result = compute_average_surface_distance(
                one_hot(pred), one_hot(gt), include_background=True, symmetric=True, spacing=SPACING
            )
    return result.numpy().ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=256, help="edge of the volume in x and y (default 256)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads for SimpleITK and torch (default 2)"
    )
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    gt = phantom(args.size)
    pred = phantom(args.size, shift=1.5, grow=1.0)
    print(
        f"volumes {gt.shape} uint8 ({gt.size / 1e6:.1f} M voxels), spacing {SPACING}, labels {LABELS}, "
        f"SimpleITK threads {args.threads}; ours is single-threaded numpy/scipy"
    )
    print("class voxels (gt):", {label: int(np.count_nonzero(gt == label)) for label in LABELS})
    pred_image, gt_image = sitk_image(pred), sitk_image(gt)
    rows = []

    with ResourceMeter(interval=0.05) as meter_dice:
        t_ours, ours = timed(
            lambda: overlap_scores(pred, gt, labels=LABELS, spacing=SPACING), repeats=3
        )
    t_sklearn, sk_dice = timed(
        lambda: f1_score(gt.ravel(), pred.ravel(), labels=list(LABELS), average=None)
    )
    rows.append(
        ("Dice", "sklearn f1_score", t_ours, t_sklearn, np.abs(ours["dice"] - sk_dice).max())
    )

    def sitk_overlap():
        f = sitk.LabelOverlapMeasuresImageFilter()
        f.Execute(pred_image, gt_image)
        return np.array([f.GetDiceCoefficient(label) for label in LABELS])

    t_sitk, sitk_dice = timed(sitk_overlap)
    rows.append(
        (
            "Dice",
            "SimpleITK LabelOverlapMeasures",
            t_ours,
            t_sitk,
            np.abs(ours["dice"] - sitk_dice).max(),
        )
    )

    with ResourceMeter(interval=0.05) as meter_surface:
        t_surface, surface = timed(lambda: surface_scores(pred, gt, LABELS, SPACING))
    t_hd, sitk_hd = timed(lambda: sitk_hausdorff(pred_image, gt_image))
    rows.append(
        (
            "Hausdorff",
            "SimpleITK HausdorffDistance (contours)",
            t_surface,
            t_hd,
            np.abs(surface["hausdorff"] - sitk_hd).max(),
        )
    )
    try:
        import monai  # noqa: F401  (optional reference, not a dependency of the framework)
    except ImportError:
        t_ref, (ref_hd95, ref_assd) = timed(lambda: sitk_maurer_hd95_assd(pred_image, gt_image))
        name = "SimpleITK SignedMaurerDistanceMap (HD95+ASSD)"
        rows.append(("HD95", name, t_surface, t_ref, np.abs(surface["hd95"] - ref_hd95).max()))
        rows.append(("ASSD", name, t_surface, t_ref, np.abs(surface["assd"] - ref_assd).max()))
    else:
        t_ref, ref_hd95 = timed(lambda: monai_surface_metric(pred, gt, "hd95"))
        rows.append(
            (
                "HD95",
                "MONAI compute_hausdorff_distance",
                t_surface,
                t_ref,
                np.abs(surface["hd95"] - ref_hd95).max(),
            )
        )
        t_ref, ref_assd = timed(lambda: monai_surface_metric(pred, gt, "assd"))
        rows.append(
            (
                "ASSD",
                "MONAI compute_average_surface_distance",
                t_surface,
                t_ref,
                np.abs(surface["assd"] - ref_assd).max(),
            )
        )

    print()
    print(
        f"{'metric':<10}{'reference':<46}{'ours s':>9}{'ref s':>9}{'ref/ours':>10}{'max |diff|':>12}"
    )
    for metric, reference, t_mine, t_reference, diff in rows:
        print(
            f"{metric:<10}{reference:<46}{t_mine:>9.3f}{t_reference:>9.3f}{t_reference / t_mine:>10.1f}{diff:>12.2e}"
        )
    print(
        "\n(ours: Dice = confusion matrix of all classes, best of 3; surface = Hausdorff, HD95 and ASSD of all "
        "classes in one pass, so the same time is compared with each reference)"
    )
    print("values per class:")
    for i, label in enumerate(LABELS):
        print(
            f"  label {label}: dice {ours['dice'][i]:.4f}  hausdorff {surface['hausdorff'][i]:.3f}  "
            f"hd95 {surface['hd95'][i]:.3f}  assd {surface['assd'][i]:.3f}"
        )
    for title, meter in (("overlap", meter_dice), ("surface", meter_surface)):
        usage = meter.usage
        print(
            f"ResourceMeter {title}: wall {usage.wall_time_s:.2f} s, CPU {usage.cpu_time_s:.2f} s, "
            f"peak RSS {usage.peak_rss_bytes / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
