"""Page-update time of the dashboard's "My jobs" page with thousands of queued jobs.

Submits one held job array of N tasks to the test cluster (``sbatch --hold --array``,
via the framework's ``python-script`` template), drives the real page with Streamlit's
AppTest and prints the median time of

* a cold update: caches cleared, so it includes ``squeue`` for all N tasks, parsing,
  filtering and building the table (what the 10 s auto-refresh costs);
* a warm update: a new search text on the cached queue (what typing costs);

then cancels the array (its tasks stay listed as CANCELLED for SLURM's MinJobAge, 5 min
on the test cluster: wait that long between runs). Goal: <= 2 s per update with 5,000
queued jobs.

Run (needs ``sudo scripts/slurm-cluster start``)::

    .mdlma/venv/bin/python benchmarks/dashboard_jobs.py --jobs 5000 --repeat 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"


def wait_for_tasks(array_id: str, count: int, timeout: float = 120) -> None:
    from unified_framework import hpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(hpc.status([array_id])) >= count:
            return
        time.sleep(1)
    raise SystemExit(
        f"the controller lists fewer than {count} tasks of job {array_id} after {timeout:.0f} s"
    )


def timed(app, action) -> float:
    start = time.perf_counter()
    action()
    app.run()
    seconds = time.perf_counter() - start
    if app.exception:
        raise SystemExit(f"the page failed: {app.exception[0].message}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000, help="queued array tasks (default 5000)")
    parser.add_argument(
        "--repeat", type=int, default=7, help="timed updates of each kind (default 7)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest's "no runtime" notices
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from unified_framework import hpc

    if hpc.backend_name() != "slurm":
        raise SystemExit("needs the SLURM test cluster: sudo scripts/slurm-cluster start")
    workdir = Path(tempfile.mkdtemp(prefix="mdlma-bench-"))
    script = workdir / "idle.py"
    script.write_text("print('held, never runs')\n")
    print(f"submitting a held array of {args.jobs} tasks ...", flush=True)
    record = hpc.submit(
        "python-script",
        {
            "job_name": "bench-held",
            "workdir": str(workdir),
            "script": str(script),
            "array": f"0-{args.jobs - 1}",
            "time": "00:01:00",
            "mem": "100M",
        },
        hold=True,
    )
    array_id = record.job_ids[0]
    try:
        wait_for_tasks(array_id, args.jobs)
        start = time.perf_counter()
        listed = hpc.status()
        squeue_s = time.perf_counter() - start
        pending = sum(job.state == "PENDING" for job in listed)

        app = AppTest.from_file(str(APP), default_timeout=120)
        app.run()
        app.switch_page("views/jobs.py").run()
        shown = len(app.dataframe(key="jobs_queue_table").value)
        if shown < args.jobs:
            raise SystemExit(f"the page shows {shown} jobs, expected at least {args.jobs}")

        cold, warm = [], []
        for i in range(args.repeat):
            cold.append(timed(app, st.cache_data.clear))
            warm.append(
                timed(app, lambda i=i: app.text_input(key="jobs_search").set_value(f"_{i}"))
            )
        shown_filtered = len(app.dataframe(key="jobs_queue_table").value)
    finally:
        hpc.cancel([array_id])
    print(
        f"jobs listed by squeue:               {len(listed)}, {pending} of them pending "
        f"(one squeue call: {squeue_s:.2f} s)"
    )
    print(f"jobs on the page:                    {shown} (last search shows {shown_filtered})")
    print(
        f"cold page update (squeue + table):   median {statistics.median(cold):.2f} s "
        f"(min {min(cold):.2f}, max {max(cold):.2f}, n={len(cold)})"
    )
    print(
        f"warm page update (search, cached):   median {statistics.median(warm):.2f} s "
        f"(min {min(warm):.2f}, max {max(warm):.2f}, n={len(warm)})"
    )
    print(
        f"goal <= 2 s with 5,000 queued jobs:  {'met' if statistics.median(cold) <= 2 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
