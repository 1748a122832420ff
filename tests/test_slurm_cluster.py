"""scripts/slurm-cluster: the one-node test cluster itself."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest_slurm import REPO, as_test_user, machine_lock

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
SCRIPT = str(REPO / "scripts" / "slurm-cluster")
DAEMONS = ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd")


def _run(
    *args: str, timeout: float = 600, state: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"MDLMA_SLURM_STATE": str(state)} if state else {})}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_config_matches_this_machine(slurm_cluster):
    conf = (slurm_cluster / "etc" / "slurm.conf").read_text()
    for line in (
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "JobAcctGatherType=jobacct_gather/linux",
    ):
        assert line in conf
    node = next(line for line in conf.splitlines() if line.startswith("NodeName="))
    assert f"CPUs={os.cpu_count()} " in node and "Gres" not in node
    partitions = [line for line in conf.splitlines() if line.startswith("PartitionName=")]
    assert len(partitions) >= 2
    assert (
        slurm_cluster / "etc" / "slurmdbd.conf"
    ).stat().st_mode & 0o077 == 0  # holds the DB password


def test_status_lists_running_daemons_and_an_idle_node():
    proc = _run("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for daemon in DAEMONS:
        assert f"{daemon}" in proc.stdout and "stopped" not in proc.stdout
    states = subprocess.run(
        ["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert any(line.startswith("debug* ") for line in states) and any(
        line.startswith("batch ") for line in states
    )
    assert {line.split()[1] for line in states if line} <= {
        "idle",
        "mixed",
        "allocated",
        "completing",
    }
    accounting = subprocess.run(
        ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mdlma" in accounting.stdout.split()


def test_start_again_is_quick_and_changes_nothing(slurm_cluster):
    pids = _daemon_pids()
    with machine_lock("slurm-cluster"):  # not while another pytest worker's fixture starts it
        started = time.monotonic()
        proc = _run("start")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    assert "running: cluster 'mdlma'" in proc.stdout
    assert _daemon_pids() == pids


def test_the_running_cluster_state_passes_the_checks(slurm_cluster):
    """What every start checks (see test_start_again_is_quick_and_changes_nothing)."""
    assert slurm_cluster == Path(_run("state-dir").stdout.strip())
    for secret in ("munge.key", "db.pass", "slurmdbd.conf"):
        assert (slurm_cluster / "etc" / secret).stat().st_mode & 0o077 == 0, secret
    assert slurm_cluster.stat().st_uid == os.geteuid()


# The refusals below use their own state folder: the check fires before anything is
# created, started or stopped, so the shared running cluster is never touched.
def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[slurm-cluster] error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("scripts/slurm-cluster start/stop need root")


def test_start_refuses_a_state_folder_another_user_planted(planted_state):
    """The attack: mdlmatest creates the folder first, with a munge key they know."""
    as_test_user("mkdir", str(planted_state / "etc"))
    as_test_user("sh", "-c", f"echo known-key > {planted_state}/etc/munge.key")
    conf_before = (
        os.readlink("/etc/slurm/slurm.conf") if os.path.islink("/etc/slurm/slurm.conf") else None
    )
    _refused(
        _run("start", state=planted_state), f"state folder {planted_state} belongs to mdlmatest"
    )
    assert sorted(p.name for p in planted_state.rglob("*")) == [
        "etc",
        "munge.key",
    ]  # nothing created
    assert (
        os.readlink("/etc/slurm/slurm.conf") if os.path.islink("/etc/slurm/slurm.conf") else None
    ) == conf_before
    _refused(_run("stop", state=planted_state), "belongs to mdlmatest")


def test_start_refuses_secrets_others_may_read_or_write(tmp_path):
    _root_only()
    state = tmp_path / "slurm-state"
    (state / "etc").mkdir(parents=True)
    key = state / "etc" / "munge.key"
    key.write_bytes(b"k" * 1024)
    key.chmod(0o640)
    _refused(
        _run("start", state=state), f"secret {key} is accessible to group or others", "chmod 600"
    )
    key.chmod(0o600)
    (state / "etc" / "db.pass").write_text("x")
    (state / "etc" / "db.pass").chmod(0o660)  # group-writable
    _refused(_run("start", state=state), "db.pass is accessible")
    (state / "etc" / "db.pass").chmod(0o600)
    (state / "log").mkdir(mode=0o777)
    (state / "log").chmod(0o777)
    _refused(_run("start", state=state), f"{state / 'log'} is writable by group or others")


def test_stop_signals_only_processes_of_this_cluster(tmp_path):
    """Pid files naming unrelated processes are not trusted (numbers are reused, files planted)."""
    _root_only()
    state = tmp_path / "slurm-state"
    (state / "run").mkdir(parents=True, mode=0o700)
    sleepers = {
        name: subprocess.Popen(["sleep", "300"]) for name in ("slurmd", "slurmctld", "munged")
    }
    try:
        for name, sleeper in sleepers.items():
            (state / "run" / f"{name}.pid").write_text(f"{sleeper.pid}\n")
        before = _daemon_pids()
        proc = _run("stop", state=state, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        time.sleep(0.2)
        assert {name: s.poll() for name, s in sleepers.items()} == dict.fromkeys(sleepers)
        assert _daemon_pids() == before  # the shared cluster runs on
    finally:
        for sleeper in sleepers.values():
            sleeper.kill()
            sleeper.wait()


def _daemon_pids() -> dict[str, str]:
    """{daemon: pid} of those 'status' reports as running with a pid."""
    pids = {}
    for line in _run("status").stdout.splitlines():
        fields = line.replace("(", " ").replace(")", " ").split()
        if (
            len(fields) >= 4
            and fields[0] in DAEMONS
            and fields[1] == "running"
            and fields[2] == "pid"
        ):
            pids[fields[0]] = fields[3]
    return pids


def _alive(pid: str) -> bool:
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


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
