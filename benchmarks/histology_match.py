"""Locating synthetic histology sections in held-out implant phantoms (issue 17's benchmark).

For each case, ``make_section_sample`` (what ``mdlma sample section`` writes) cuts a
held-out phantom (seeds from 1000 on; the tests use small seeds) at a random plane
(tilt up to 25 degrees from z) and ``locate_section`` searches for it in three modes:

* ``cone``  -- a cone prior of +-30 degrees around the cutting axis (z);
* ``all``   -- no prior: every orientation (the whole sphere);
* ``local`` -- no orientation search: the cutting axis only (cone 0: offsets and in-plane
  rotations are still searched), then the local refinement; shows what the global search buys.

A case succeeds when the orientation error is below 3 degrees and the offset error at
most 3 voxels. Printed per mode: success rate, mean and median orientation error of the
successes, median offset error (voxels), median wall time per case. The in-plane
landmark error after deformable registration needs the registration package and is not
measured yet::

    python benchmarks/histology_match.py                          # 20 cases, 256^3, all modes
    python benchmarks/histology_match.py --cases 4 --shape 64 --modes cone local
"""

from __future__ import annotations

import argparse
import statistics
import time

from unified_framework.data.section import make_section_sample
from unified_framework.histology import angle_between
from unified_framework.histology.match import locate_section

MODES = {
    "cone": {"axis": (1.0, 0.0, 0.0), "cone": 30.0},
    "all": {"axis": None},
    "local": {"axis": (1.0, 0.0, 0.0), "cone": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--shape", type=int, default=256, help="phantom side (voxels)")
    parser.add_argument(
        "--modes", nargs="+", choices=sorted(MODES), default=["cone", "all", "local"]
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    spacing = 5.0
    rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m in args.modes}
    for case in range(args.cases):
        volume, section, truth = make_section_sample(
            (args.shape,) * 3, seed=1000 + case, spacing=spacing
        )
        for mode in args.modes:
            start = time.perf_counter()
            result = locate_section(volume, section, device=args.device, **MODES[mode])
            wall = time.perf_counter() - start
            best = result.best
            angle = angle_between(best.plane.normal, truth["plane"]["normal"])
            offset = abs(best.offset_um - truth["offset_um"]) / spacing
            rows[mode].append((angle, offset, wall))
            print(
                f"case {case} {mode:5s}: orientation error {angle:6.2f} deg, offset error {offset:5.2f} voxels, {wall:6.1f} s",
                flush=True,
            )
    print(f"\n{args.cases} cases, phantom {args.shape}^3, voxel {spacing} um")
    for mode, values in rows.items():
        ok = [v for v in values if v[0] < 3 and v[1] <= 3]
        angles = [v[0] for v in ok]
        print(
            f"{mode:5s}: success {100 * len(ok) / len(values):5.1f} %, orientation error of successes mean "
            f"{statistics.mean(angles) if angles else float('nan'):.2f} / median {statistics.median(angles) if angles else float('nan'):.2f} deg, "
            f"median offset {statistics.median(v[1] for v in values):.2f} voxels, median wall {statistics.median(v[2] for v in values):.1f} s per case"
        )


if __name__ == "__main__":
    main()
