"""``mdlma quantify``: degradation and osseointegration quantities from label volumes.

Examples
--------
``mdlma quantify seg.zarr --out report.json --days 28 --cylinder --initial-radius 800``
``mdlma quantify a.tif b.tif --names a b --out report.json --csv table.csv``
``mdlma quantify seg.zarr --uncertainty prob.zarr --out report.json``
``mdlma quantify seg.zarr --uncertainty sample prob.zarr --samples 20 --out report.json``
``mdlma quantify screw.tif --screw --initial-radius 1000 --days 28 --out report.json``
``mdlma quantify d0.tif d28.tif d56.tif --time-series --days 0 28 56 --out ts.json --change-map change.tif``
``mdlma quantify compare sun.zarr otsu.tif --names SUN Otsu --truth gt.tif --out compare.json``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="JSON", help="report to write")
    parser.add_argument(
        "--csv",
        type=Path,
        metavar="CSV",
        help="table to write, one row per sample (default: the report's name with .csv)",
    )
    parser.add_argument("--names", nargs="+", metavar="NAME", help="one name per label volume")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size in µm (default: from the files)",
    )
    parser.add_argument(
        "--classes",
        metavar="SPEC",
        help="label of each role by number or class name, e.g. 'bone=1,residual=2,layer=3' (default 0-3 as the phantom)",
    )
    parser.add_argument(
        "--class-names",
        nargs="+",
        metavar="NAME",
        help="names of the labels 0, 1, 2, ... (roles are found by name, e.g. 'residual implant')",
    )
    parser.add_argument("--roi", metavar="MASK", help="region of interest (a mask volume)")
    parser.add_argument(
        "--band",
        type=float,
        nargs=2,
        metavar=("NEAR", "FAR"),
        help="keep only voxels NEAR..FAR µm from the implant surface (0 inside the implant)",
    )
    parser.add_argument(
        "--initial", metavar="MASK", help="initial implant geometry as a mask volume"
    )
    parser.add_argument(
        "--cylinder",
        action="store_true",
        help="initial implant: a cylinder fitted to the residual material",
    )
    parser.add_argument(
        "--screw",
        action="store_true",
        help="initial implant: a screw (core radius, thread depth, pitch, axis) fitted to the residual material",
    )
    parser.add_argument(
        "--initial-radius",
        type=float,
        metavar="UM",
        help="nominal implant radius for --cylinder, major (thread crest) radius for --screw "
        "(default: the least degraded residual surface)",
    )
    parser.add_argument("--implanted", metavar="DATE", help="implantation date YYYY-MM-DD")
    parser.add_argument(
        "--scanned", nargs="+", metavar="DATE", help="scan date(s) YYYY-MM-DD, one per volume"
    )
    parser.add_argument(
        "--days", type=float, nargs="+", metavar="D", help="days since implantation, one per volume"
    )
    parser.add_argument(
        "--shell-width",
        type=float,
        default=50.0,
        metavar="UM",
        help="width of the BV/TV shells (default 50)",
    )
    parser.add_argument(
        "--shells", type=int, default=10, metavar="N", help="number of shells (default 10)"
    )
    parser.add_argument(
        "--thickness-convention",
        choices=("unbiased", "bonej"),
        default="unbiased",
        help="local thickness 2r - h/4 (default) or BoneJ's 2r",
    )
    parser.add_argument(
        "--min-fragment",
        type=int,
        default=1,
        metavar="VOXELS",
        help="smallest residual fragment counted (default 1)",
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quantify",
        help="degradation quantities from label volumes (volumes, depth/rate, layer thickness, BV/TV, BIC)",
        description=(
            "Measure, from label volumes (0 background, 1 bone, 2 residual implant, 3 degradation layer, "
            "or --classes), the quantities implant studies publish, in physical units; write a JSON report "
            "and a CSV table (one row per sample). 'mdlma quantify compare LABELS ...' compares several "
            "segmentations of one scan side by side (relative to --truth when given). See docs/analysis.md."
        ),
    )
    parser.add_argument(
        "labels",
        nargs="+",
        metavar="LABELS",
        help="label volume(s); 'compare' as the first word compares segmentations (see 'mdlma quantify compare -h')",
    )
    _common(parser)
    parser.add_argument(
        "--uncertainty",
        nargs="+",
        metavar="PROB",
        help="SUN's fused probabilities (classes x z x y x), one per volume: report each quantity's range "
        "with the uncertain voxels assigned each way; 'sample' before the files also draws --samples "
        "label maps from the probabilities (mean and 2.5-97.5 %% range)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="label maps drawn from the probabilities (implies 'sample'; default 20 with 'sample')",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the drawn label maps (default 0)"
    )
    parser.add_argument(
        "--smooth",
        type=float,
        default=1.5,
        metavar="VOXELS",
        help="correlation length of the draws, Gaussian sigma in voxels (0: independent voxels; default 1.5)",
    )
    parser.add_argument(
        "--entropy",
        nargs="+",
        metavar="ENTROPY",
        help="SUN's entropy volume(s), when there are no probabilities",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="a voxel is uncertain below this top probability (default 0.9)",
    )
    parser.add_argument(
        "--entropy-threshold",
        type=float,
        default=0.3,
        help="with --entropy: uncertain above this (default 0.3)",
    )
    parser.add_argument(
        "--time-series",
        action="store_true",
        help="the volumes are scans of one sample at --days: register, map, report change",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGE",
        help="grey images of the time series to register (default: images made from the labels)",
    )
    parser.add_argument(
        "--registration",
        choices=("rigid", "affine", "convexadam", "none"),
        default="rigid",
        help="time-series registration (default rigid)",
    )
    parser.add_argument(
        "--change-map", metavar="OUT", help="time series: write the change map (first -> last) here"
    )
    parser.add_argument(
        "--maps", type=Path, metavar="DIR", help="write each volume's layer thickness map to DIR"
    )
    parser.add_argument(
        "--truth",
        metavar="GT",
        help="compare only: ground-truth labels, or a JSON of exact values ('mdlma sample implant --analytic --truth')",
    )
    parser.set_defaults(func=_run)


def _read(path: str) -> Any:
    from ..io import read_volume

    return read_volume(path, expect_ndim=3)


def _spacing(args: argparse.Namespace, volume: Any) -> tuple[float, ...]:
    return tuple(args.spacing) if args.spacing else tuple(volume.spacing)


def _per_volume(values: list | None, n: int, option: str) -> list:
    if values is None:
        return [None] * n
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise InputError(f"{option}: give one value or one per volume ({n}), got {len(values)}")
    return list(values)


def _options(args: argparse.Namespace, shape: tuple[int, ...]) -> dict[str, Any]:
    from ..analysis import resolve_roles

    options: dict[str, Any] = {
        "roles": resolve_roles(args.classes, args.class_names),
        "band": tuple(args.band) if args.band else None,
        "cylinder": bool(args.cylinder),
        "screw": bool(args.screw),
        "initial_radius": args.initial_radius,
        "implantation_date": args.implanted,
        "shell_width": args.shell_width,
        "shells": args.shells,
        "thickness_convention": args.thickness_convention,
        "min_fragment_voxels": args.min_fragment,
    }
    if args.roi:
        options["roi"] = _read(args.roi).data
    if args.initial:
        options["initial"] = _read(args.initial).data
    return options


def _names(args: argparse.Namespace) -> list[str]:
    if args.names:
        if len(args.names) != len(args.labels):
            raise InputError(
                f"--names: {len(args.names)} names for {len(args.labels)} label volumes"
            )
        return list(args.names)
    return [Path(p).name.split(".")[0] or str(p) for p in args.labels]


def _run(args: argparse.Namespace) -> int:
    import sys

    if args.labels and args.labels[0] == "compare":
        args.labels = args.labels[1:]
        if not args.labels:
            raise InputError("quantify compare: give the segmentations to compare")
        return _compare(args)
    if args.truth:
        raise InputError("--truth belongs to 'mdlma quantify compare'")
    from tqdm import tqdm

    from ..analysis import quantify
    from ..analysis.report import write_csv, write_json

    names = _names(args)
    n = len(args.labels)
    days = _per_volume(args.days, n, "--days")
    scanned = _per_volume(args.scanned, n, "--scanned")
    method, prob_paths = _uncertainty_method(args)
    probs = _per_volume(prob_paths, n, "--uncertainty") if prob_paths else [None] * n
    ents = _per_volume(args.entropy, n, "--entropy") if args.entropy else [None] * n
    csv_path = args.csv or args.out.with_suffix(".csv")
    if args.time_series:
        return _time_series(args, names, days, csv_path)
    samples, rows = [], []
    bar = tqdm(total=n, desc="quantify", unit="volume", disable=None, file=sys.stderr)
    for path, name, day, scan, prob, ent in zip(args.labels, names, days, scanned, probs, ents):
        bar.set_postfix_str(name)
        volume = _read(path)
        spacing = _spacing(args, volume)
        options = _options(args, volume.shape)
        options.update(days=day, scan_date=scan, name=name)
        entry: dict[str, Any] = {"name": name, "path": str(path)}
        if prob or ent:
            from ..analysis.uncertainty import quantify_uncertainty

            result_u = quantify_uncertainty(
                volume.data,
                spacing,
                _read_prob(prob) if prob else None,
                _read(ent).data if ent else None,
                threshold=args.threshold,
                entropy_threshold=args.entropy_threshold,
                samples=method[1] if prob else 0,
                seed=args.seed,
                smooth=args.smooth,
                progress=lambda what, name=name: bar.set_postfix_str(f"{name}: {what}"),
                keep_maps=bool(args.maps),
                **options,
            )
            result = result_u.result
            entry.update(result_u.to_dict())
            row = {"sample": name, **result.row()}
            for key, (low, high) in result_u.ranges.items():
                row[f"{key}_low"], row[f"{key}_high"] = low, high
            if result_u.sampling is not None:
                for key in result.row():
                    for stat in ("mean", "low", "high"):
                        row[f"{key}_sampled_{stat}"] = result_u.sampling[stat].get(key)
        else:
            result = quantify(volume.data, spacing, keep_maps=bool(args.maps), **options)
            entry.update(result.to_dict())
            row = {"sample": name, **result.row()}
        if args.maps:
            from ..io import write_volume

            target = args.maps / f"{name}_thickness.tif"
            args.maps.mkdir(parents=True, exist_ok=True)
            write_volume(target, result.full_thickness_map(volume.shape), spacing=spacing)
            entry["maps"] = {"thickness": str(target)}
        samples.append(entry)
        rows.append(row)
        bar.update()
    bar.close()
    write_json(args.out, {"kind": "samples", "samples": samples})
    write_csv(csv_path, rows)
    for row in rows:
        _summary(row)
    print(f"wrote {args.out} and {csv_path}")
    return 0


def _uncertainty_method(args: argparse.Namespace) -> tuple[tuple[str, int], list[str] | None]:
    """``(("assign" or "sample", samples), probability files)`` from ``--uncertainty [sample] PROB ...``."""
    paths = list(args.uncertainty) if args.uncertainty else None
    method = "assign"
    if paths and paths[0] in ("sample", "assign"):
        method = paths.pop(0)
        if not paths:
            raise InputError(
                f"--uncertainty {method}: give the probability file(s) after '{method}'"
            )
    if args.samples is not None:
        if args.samples < 2:
            raise InputError(f"--samples: {args.samples}; give at least 2 draws")
        if method == "assign" and paths and args.uncertainty[0] == "assign":
            raise InputError("--samples draws label maps: use --uncertainty sample PROB")
        method = "sample"
    if method == "sample" and not paths:
        raise InputError("--samples: give the fused probabilities with --uncertainty sample PROB")
    if not (args.smooth >= 0):
        raise InputError(f"--smooth: {args.smooth}; give a correlation length >= 0 voxels")
    samples = (args.samples or 20) if method == "sample" else 0
    return (method, samples), paths


def _read_prob(path: str) -> Any:
    """Fused probabilities ``(classes, z, y, x)``: SUN's Zarr store (read slab by slab) or a ``.npy`` file."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such probabilities file")
    try:
        if p.suffix == ".npy":
            return np.load(p, mmap_mode="r")
        if p.suffix == ".zarr" or p.is_dir():
            import zarr

            return zarr.open_array(str(p), mode="r")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a probability array ({exc.__class__.__name__})") from None
    raise InputError(f"{path}: fused probabilities are read from SUN's .zarr store (or .npy)")


def _summary(row: dict[str, Any]) -> None:
    def fmt(key: str, unit: str = "", digits: int = 4) -> str:
        value = row.get(key)
        return "-" if value is None else f"{value:.{digits}g}{unit}"

    print(
        f"{row.get('sample', '')}: residual {fmt('residual_volume_mm3', ' mm3')}, layer {fmt('layer_volume_mm3', ' mm3')}, "
        f"layer thickness {fmt('layer_thickness_mean_um', ' um')}, BIC {fmt('bic_percent', ' %', 3)}, "
        f"fragments {fmt('fragments')}, degraded {fmt('degraded_fraction')}, rate {fmt('degradation_rate_um_per_day', ' um/day')}"
    )


def _time_series(args: argparse.Namespace, names: list[str], days: list, csv_path: Path) -> int:
    import sys

    from tqdm import tqdm

    from ..analysis.report import write_csv, write_json
    from ..analysis.timeseries import analyse_series
    from ..io import write_volume

    if any(d is None for d in days) or len(args.labels) < 2:
        raise InputError("--time-series: give two or more volumes and --days, one per volume")
    volumes = [_read(p) for p in args.labels]
    spacing = _spacing(args, volumes[0])
    options = _options(args, volumes[0].shape)
    images = [_read(p).data for p in args.images] if args.images else None
    bar = tqdm(desc="time series", unit="step", disable=None, file=sys.stderr)

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update()

    result = analyse_series(
        [v.data for v in volumes],
        spacing,
        days,
        images=images,
        registration=args.registration,
        names=names,
        progress=step,
        **options,
    )
    bar.close()
    document = {"kind": "time-series", **result.to_dict()}
    document["samples"] = [
        {"name": n, "path": str(p), "day": d, **r.to_dict()}
        for n, p, d, r in zip(names, args.labels, result.days, result.results)
    ]
    if args.change_map and result.change_map is not None:
        write_volume(args.change_map, result.change_map, spacing=spacing)
        document["change"]["map"] = str(args.change_map)
    write_json(args.out, document)
    rows = [{"sample": n, **row} for n, row in zip(names, result.table())]
    write_csv(csv_path, rows)
    for row in rows:
        _summary(row)
    rates = result.rates
    print(
        "rates per day: "
        + ", ".join(
            f"{k} {rates[k]:.4g}"
            for k in ("residual_volume_mm3", "layer_volume_mm3", "degradation_depth_um")
            if rates.get(k) is not None
        )
    )
    print(
        f"wrote {args.out} and {csv_path}" + (f" and {args.change_map}" if args.change_map else "")
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..analysis.compare import compare_methods
    from ..analysis.report import write_csv, write_json

    names = _names(args)
    volumes = [_read(p) for p in args.labels]
    spacing = _spacing(args, volumes[0])
    for name, volume in zip(names, volumes):
        if volume.shape != volumes[0].shape:
            raise InputError(
                f"compare: {name} has shape {volume.shape}, {names[0]} {volumes[0].shape}; segmentations of one scan expected"
            )
    truth: Any = None
    if args.truth:
        if args.truth.endswith(".json"):
            try:
                truth = json.loads(Path(args.truth).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"{args.truth}: not a readable JSON file ({exc.__class__.__name__})"
                ) from None
            if isinstance(truth, dict) and "time_points" in truth:
                truth = truth["time_points"][0]
            if not isinstance(truth, dict):
                raise InputError(f"{args.truth}: expected a JSON object of exact values")
        else:
            truth = _read(args.truth).data
    options = _options(args, volumes[0].shape)
    days = _per_volume(args.days, 1, "--days")[0]
    options.update(days=days, scan_date=(args.scanned or [None])[0])
    table = compare_methods(
        {n: v.data for n, v in zip(names, volumes)}, spacing, truth=truth, **options
    )
    write_json(args.out, {"kind": "compare", "compare": table})
    csv_path = args.csv or args.out.with_suffix(".csv")
    rows = []
    for q in table["quantities"]:
        row: dict[str, Any] = {"quantity": q}
        for m in table["methods"]:
            row[m] = table["values"][q][m]
        if table["truth"] is not None:
            row["truth"] = table["truth"][q]
            for m in table["methods"]:
                row[f"{m} rel. error"] = table["relative_error"][q][m]
        rows.append(row)
    write_csv(csv_path, rows)
    width = max(len(q) for q in table["quantities"])
    header = f"{'quantity':<{width}}  " + "  ".join(f"{m:>14}" for m in table["methods"])
    if table["truth"] is not None:
        header += f"  {'truth':>14}"
    print(header)
    for q in table["quantities"]:
        cells = []
        for m in table["methods"]:
            v = table["values"][q][m]
            err = (table["relative_error"] or {}).get(q, {}).get(m) if table["truth"] else None
            text = "-" if v is None else f"{v:.4g}"
            if err is not None:
                text += f" ({100 * err:+.1f}%)"
            cells.append(f"{text:>14}")
        line = f"{q:<{width}}  " + "  ".join(cells)
        if table["truth"] is not None:
            t = table["truth"][q]
            line += f"  {('-' if t is None else f'{t:.4g}'):>14}"
        print(line)
    print(f"wrote {args.out} and {csv_path}")
    return 0
