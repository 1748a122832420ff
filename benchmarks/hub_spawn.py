"""Spawn-to-ready time of a JupyterLab server on the idle test cluster.

Needs the hub (``sudo scripts/hub start``) and root to read a test user's password.
Each round submits the options form, follows the progress until the server answers,
then stops the server and waits until its SLURM job is gone::

    sudo .mdlma/venv/bin/python benchmarks/hub_spawn.py [--repeats 5] [--url http://127.0.0.1:8000]

Prints every round and the median (seconds from form submission to "ready").
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from unified_framework.hub.client import HubClient

REPO = Path(__file__).resolve().parents[1]


def job_count(user: str) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i"], capture_output=True, text=True, check=True
    )
    return len(out.stdout.split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="mdlmatest")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--module", default="mdlma/unified-framework/0.1.0")
    args = parser.parse_args()

    password = subprocess.run(
        [REPO / "scripts" / "hub", "password", args.user],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    client = HubClient(args.url, args.user)
    client.login(password)
    client.stop()
    options = {
        "partition": "debug",
        "runtime_minutes": "30",
        "cpus": "1",
        "memory_gb": "2",
        "module": args.module,
    }
    seconds = []
    for round_ in range(1, args.repeats + 1):
        while job_count(args.user):  # the previous job must be gone: measure an idle cluster
            time.sleep(0.5)
        result = client.spawn(options)
        if not result.ready:
            print(f"round {round_}: spawn failed: {result.message}", file=sys.stderr)
            return 1
        seconds.append(result.seconds)
        print(f"round {round_}: ready after {result.seconds:.1f} s")
        client.stop()
    print(
        f"spawn-to-ready, median of {len(seconds)}: {statistics.median(seconds):.1f} s "
        f"(min {min(seconds):.1f} s, max {max(seconds):.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
