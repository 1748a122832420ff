"""Fixtures for tests that need the real one-node SLURM test cluster.

Use them with ``@pytest.mark.slurm`` and ``from conftest_slurm import slurm_cluster``
(or register this module once in ``tests/conftest.py`` with
``pytest_plugins = ["conftest_slurm"]``).

``slurm_cluster`` runs ``scripts/slurm-cluster start`` once per session (it installs
Debian's slurm-wlm, munge, MariaDB and slurmdbd if needed, and is quick when the cluster
already runs). Where ``sbatch`` is missing and ``CI`` is not set the tests are skipped;
under ``CI=true`` a cluster that cannot be started fails them instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: A local account for tests of owner-only filtering (created by the fixture, as root).
TEST_USER = "mdlmatest"


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock shared by every pytest process on this machine.

    ``pytest -n`` (pytest-xdist, what ``scripts/test`` runs) gives each worker its own
    session fixtures, so two workers would otherwise start the cluster or create the test
    user at the same moment.
    """
    path = Path(tempfile.gettempdir()) / f"mdlma-tests-{name}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cluster_state_dir() -> Path:
    """The test cluster's state folder: ``$MDLMA_SLURM_STATE`` or the script's default."""
    script = REPO / "scripts" / "slurm-cluster"
    return Path(
        subprocess.run(
            [script, "state-dir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Path:
    """Ensure the test cluster runs; return its state directory."""
    if shutil.which("sbatch") is None and not IN_CI:
        pytest.skip(
            "SLURM is not installed; run 'sudo scripts/slurm-cluster start' to get the test cluster"
        )
    script = str(REPO / "scripts" / "slurm-cluster")
    running = (
        subprocess.run([script, "status"], capture_output=True, text=True, timeout=120).returncode
        == 0
    )
    if running and os.geteuid() != 0:
        return cluster_state_dir()
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the SLURM test cluster is not running and starting it needs root")
        pytest.skip(
            "the SLURM test cluster is not running; start it with 'sudo scripts/slurm-cluster start'"
        )
    with machine_lock("slurm-cluster"):
        proc = subprocess.run([script, "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/slurm-cluster start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return cluster_state_dir()


@pytest.fixture(scope="session")
def slurm_test_user(slurm_cluster) -> str:
    """A second, unprivileged local user (``mdlmatest``), created if missing."""
    return ensure_test_user()


def ensure_test_user() -> str:
    """Create the unprivileged local user ``mdlmatest`` if missing (root only; else skip)."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(f"user {TEST_USER} does not exist and only root can create it")
        with machine_lock("test-user"):
            try:  # another pytest worker may have created it while this one waited
                pwd.getpwnam(TEST_USER)
            except KeyError:
                subprocess.run(
                    ["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER], check=True
                )
    return TEST_USER


@pytest.fixture
def planted_state() -> Iterator[Path]:
    """An empty folder in world-writable /var/tmp that ``mdlmatest`` created first, as an
    attacker would plant a service's state folder; removed afterwards. Root only."""
    if os.geteuid() != 0:
        pytest.skip("planting a folder as another user needs root")
    user = ensure_test_user()
    made = subprocess.run(
        ["runuser", "-u", user, "--", "mktemp", "-d", "/var/tmp/mdlma-planted.XXXXXX"],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = Path(made.stdout.strip())
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_test_user(*command: str) -> None:
    """Run ``command`` as ``mdlmatest`` (it must succeed)."""
    subprocess.run(["runuser", "-u", TEST_USER, "--", *command], check=True)


def grant_traversal(path: Path) -> None:
    """Let other users reach ``path``: ``o+x`` (never ``o+r``) on it and every folder above it.

    The test interpreter is often a venv linked to a Python under root's home (700), which
    the test user cannot execute; ``scripts/hub`` opens the same path for the hub's users.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if folder.is_dir() and not mode & 0o001:
            folder.chmod(mode | 0o001)


@pytest.fixture(scope="session")
def test_user_python(slurm_test_user) -> list[str]:
    """Command prefix that runs this test interpreter as the unprivileged ``slurm_test_user``.

    Root reads and writes every file whatever its mode, so permission errors only show
    when a command runs as another user.
    """
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    for target in (Path(sys.executable).resolve().parent, Path(sys.executable).parent, REPO):
        grant_traversal(target)
    command = ["runuser", "-u", slurm_test_user, "--", sys.executable]
    check = subprocess.run(
        [*command, "-c", "import unified_framework.cli.main"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={"PATH": os.environ["PATH"], "HOME": "/"},
        check=False,
    )
    assert check.returncode == 0, (
        f"{slurm_test_user} cannot run {sys.executable}: {check.stderr[-2000:]}"
    )
    return command


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_for_jobs(job_ids, timeout: float, what: str, backend: str = "slurm"):
    """Wait until every job of ``job_ids`` has finished; return their :class:`hpc` statuses."""
    from unified_framework import hpc

    def finished():
        jobs = hpc.status(list(job_ids), backend=backend)
        return jobs if jobs and all(j.finished for j in jobs) else None

    return wait_for(finished, timeout=timeout, what=what)


CHAIN_FORM = """\
title: Array and merge (test template)
description: A job array whose tasks write parts, and a merge job that waits for all of them.
jobs:
  - {name: work, script: script.sh.j2}
  - {name: merge, script: merge.sh.j2, after: work}
parameters:
  job_name: {type: name, default: chain, help: Name in the queue.}
  workdir: {type: path, kind: dir, access: rwx, default: ".", help: Working directory.}
  tasks: {type: int, default: 3, min: 1, max: 10, help: Number of array tasks.}
  fail_task: {type: int, default: -1, min: -1, max: 10, help: This task exits with status 3.}
  seconds: {type: int, default: 1, min: 0, max: 60, help: How long each task sleeps.}
"""
CHAIN_WORK = """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --array=0-{{ tasks - 1 }}
#SBATCH --time=00:02:00
#SBATCH --mem=100M
set -euo pipefail
cd -- {{ workdir }}
if [ "$SLURM_ARRAY_TASK_ID" = {{ fail_task }} ]; then exit 3; fi
sleep {{ seconds }}
echo "part $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID $(date +%s.%N)" > "part-$SLURM_ARRAY_TASK_ID.txt"
"""
CHAIN_MERGE = """\
#!/bin/bash
#SBATCH --job-name={{ job_name ~ "-merge" }}
#SBATCH --time=00:02:00
#SBATCH --mem=100M
set -euo pipefail
cd -- {{ workdir }}
echo "merge $(date +%s.%N)" > merged.txt
cat part-*.txt >> merged.txt
"""


def make_chain_template(root: Path) -> Path:
    """A two-step template (array + dependent merge) in ``root/chain``; returns its folder."""
    folder = root / "chain"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "form.yml").write_text(CHAIN_FORM)
    (folder / "script.sh.j2").write_text(CHAIN_WORK)
    (folder / "merge.sh.j2").write_text(CHAIN_MERGE)
    return folder
