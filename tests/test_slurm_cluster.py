"""scripts/slurm-cluster: the one-node test cluster itself."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest_slurm import REPO, slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
SCRIPT = str(REPO / "scripts" / "slurm-cluster")
DAEMONS = ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def test_config_matches_this_machine(slurm_cluster):
    conf = (slurm_cluster / "etc" / "slurm.conf").read_text()
    for line in (
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "AccountingStorageType=accounting_storage/slurmdbd", "JobAcctGatherType=jobacct_gather/linux",
    ):
        assert line in conf
    node = next(line for line in conf.splitlines() if line.startswith("NodeName="))
    assert f"CPUs={os.cpu_count()} " in node and "Gres" not in node
    partitions = [line for line in conf.splitlines() if line.startswith("PartitionName=")]
    assert len(partitions) >= 2
    assert (slurm_cluster / "etc" / "slurmdbd.conf").stat().st_mode & 0o077 == 0  # holds the DB password


def test_status_lists_running_daemons_and_an_idle_node():
    proc = _run("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for daemon in DAEMONS:
        assert f"{daemon}" in proc.stdout and "stopped" not in proc.stdout
    states = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, check=True).stdout.split("\n")
    assert any(line.startswith("debug* ") for line in states) and any(line.startswith("batch ") for line in states)
    assert {line.split()[1] for line in states if line} <= {"idle", "mixed", "allocated", "completing"}
    accounting = subprocess.run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
                                capture_output=True, text=True, check=True)
    assert "mdlma" in accounting.stdout.split()


def test_start_again_is_quick_and_changes_nothing(slurm_cluster):
    pids = _daemon_pids()
    started = time.monotonic()
    proc = _run("start")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert "running: cluster 'mdlma'" in proc.stdout
    assert _daemon_pids() == pids


def _daemon_pids() -> dict[str, str]:
    """{daemon: pid} of those 'status' reports as running with a pid."""
    pids = {}
    for line in _run("status").stdout.splitlines():
        fields = line.replace("(", " ").replace(")", " ").split()
        if len(fields) >= 4 and fields[0] in DAEMONS and fields[1] == "running" and fields[2] == "pid":
            pids[fields[0]] = fields[3]
    return pids


def _alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.slow
def test_stop_leaves_nothing_running_and_start_recovers(slurm_cluster):
    """Stops the shared test cluster for a few seconds; it is started again at the end."""
    pids = _daemon_pids()
    assert {"slurmctld", "slurmd", "slurmdbd", "mariadb"} <= set(pids)
    try:
        proc = _run("stop")
        assert proc.returncode == 0, proc.stderr
        assert not [d for d, pid in pids.items() if _alive(pid)]
        assert not any(Path(p).name.startswith("slurmstepd") for p in _executables())
        status = _run("status")
        assert status.returncode == 3 and status.stdout.count("stopped") >= 4
    finally:
        proc = _run("start")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _run("status").returncode == 0


def _executables() -> list[str]:
    names = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                names.append(os.readlink(entry / "exe"))
            except OSError:
                continue
    return names
