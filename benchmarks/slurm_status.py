"""How long the dashboard waits for the user's job list and history with 5,000 jobs.

Needs the test cluster (``sudo scripts/slurm-cluster start``). Submits ``--jobs`` held
jobs (``sbatch --hold``: nothing runs) and times ``unified_framework.hpc.status()`` (one
``squeue`` call) over them; then cancels them all and times ``hpc.history()`` for those
job ids, and for the user's last day (``sacct -X``, plus one ``sacct`` for the steps of
the jobs that ran). Each figure shows the first SLURM command and our parsing apart,
and the whole call, next to the goal of 1 s.

By default every job is its own ``sbatch`` (about a minute for 5,000 on 2 cores);
``--arrays`` fakes them as held job arrays instead (seconds; squeue lists every task,
but accounting keeps one record per pending array).

    python benchmarks/slurm_status.py [--jobs 5000] [--arrays] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from unified_framework import hpc
from unified_framework.hpc import slurm

GOAL_S = 1.0
MAX_ARRAY = 5000  # tasks per array (the test cluster allows 10,000)
SBATCH = [
    "sbatch",
    "--parsable",
    "--hold",
    "--job-name=mdlma-bench",
    "--output=/dev/null",
    "--time=00:01:00",
    "--mem=10M",
]


def timed(function, repeat: int) -> tuple[float, float, object]:
    """Median and best wall time of ``function()`` over ``repeat`` runs, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def _sbatch(extra: list[str]) -> str:
    out = subprocess.run(
        SBATCH + extra + ["--wrap=true"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip().split(";")[0]


def submit_held(total: int, arrays: bool) -> list[str]:
    """Job ids of ``total`` held jobs (array ids with ``arrays``)."""
    if arrays:
        sizes = [min(MAX_ARRAY, total - start) for start in range(0, total, MAX_ARRAY)]
        return [_sbatch([f"--array=0-{size - 1}"]) for size in sizes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(_sbatch, [[] for _ in range(total)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=int, default=5000, help="queued jobs to create (default 5000)"
    )
    parser.add_argument("--arrays", action="store_true", help="fake the jobs as held arrays (fast)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (default 5)")
    args = parser.parse_args()
    if not slurm.slurm_available():
        print(
            "SLURM is not installed; start the test cluster with: sudo scripts/slurm-cluster start"
        )
        return 1
    user = hpc.current_user()
    print(
        f"submitting {args.jobs} held jobs as {user} ({'arrays' if args.arrays else 'one sbatch each'}) ...",
        flush=True,
    )
    started = time.perf_counter()
    ids = submit_held(args.jobs, args.arrays)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    try:
        squeue_cmd = slurm.squeue_command(user)
        raw, _, text = timed(lambda: slurm.run_command(squeue_cmd), args.repeat)
        parse, _, _ = timed(lambda: slurm.parse_squeue(text), args.repeat)
        total, best, jobs = timed(lambda: hpc.status(backend="slurm"), args.repeat)
        wanted = set(ids)
        mine = sum(1 for j in jobs if j.array_job_id in wanted)
        if mine != args.jobs:
            raise SystemExit(f"expected {args.jobs} benchmark jobs in squeue, got {mine}")
        rows.append(("status(): squeue + parse", len(jobs), raw, parse, total, best))
    finally:
        subprocess.run(["scancel", *ids], check=False)
    # slurmdbd records the cancellations a little later.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len([r for r in hpc.history(ids, backend="slurm") if r.state == "CANCELLED"]) >= len(
            ids
        ):
            break
        time.sleep(1)
    for what, job_ids, since in (
        ("history(job ids)", ids, None),
        ("history(last day)", None, "now-1days"),
    ):
        command = slurm.sacct_command(
            job_ids, user, since, allocations_only=True
        )  # the first of <= 2 calls
        raw, _, text = timed(lambda command=command: slurm.run_command(command), args.repeat)
        parse, _, _ = timed(lambda text=text: slurm.parse_sacct(text), args.repeat)
        total, best, records = timed(
            lambda job_ids=job_ids, since=since: hpc.history(job_ids, since=since, backend="slurm"),
            args.repeat,
        )
        rows.append((what, len(records), raw, parse, total, best))

    print(
        f"\n{'what':26} {'rows':>6} {'command':>9} {'parse':>8} {'total':>8} {'best':>8}  goal {GOAL_S:g} s"
    )
    for what, count, raw, parse, total, best in rows:
        verdict = "met" if total <= GOAL_S else "MISSED"
        print(
            f"{what:26} {count:6d} {raw:8.3f}s {parse:7.3f}s {total:7.3f}s {best:7.3f}s  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
