"""The embedded local backend: the same API without SLURM (real subprocesses, no cluster)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from conftest_slurm import make_chain_template, wait_for, wait_for_jobs

from unified_framework import hpc
from unified_framework.errors import BackendUnavailable, InputError


@pytest.fixture(autouse=True)
def local_backend(tmp_path, monkeypatch):
    """Keep the local backend's job registry inside the test (every call names the backend)."""
    monkeypatch.setenv("MDLMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_python_script_runs_locally_with_record_and_log(tmp_path, caplog):
    (tmp_path / "run.py").write_text(
        "import os, sys\nprint('args', sys.argv[1:], 'job', os.environ['SLURM_JOB_ID'])\n"
        "open('out.txt', 'w').write(os.environ['OMP_NUM_THREADS'])\n"
    )
    with caplog.at_level(logging.WARNING, logger="unified_framework.hpc.jobs"):
        record = hpc.submit(
            "python-script",
            {"script": "run.py", "args": "one 'two words'", "cpus": 1},
            backend="local",
        )
    assert "running python-script locally as a subprocess" in caplog.text
    assert record.backend == "local" and "local subprocess" in record.note
    (job_id,) = record.job_ids
    jobs = wait_for_jobs([job_id], timeout=60, what="the local job", backend="local")
    assert [j.state for j in jobs] == ["COMPLETED"]
    folder = Path(record.path)
    assert folder.parent == tmp_path / ".mdlma-jobs"
    assert {"params.json", "job.sh", "record.json", f"slurm-{job_id}.out"} <= {
        p.name for p in folder.iterdir()
    }
    log = (folder / f"slurm-{job_id}.out").read_text()
    assert f"args ['one', 'two words'] job {job_id}" in log
    assert (tmp_path / "out.txt").read_text() == "1"  # ran in place, in the working directory
    saved = json.loads((folder / "record.json").read_text())
    assert (
        saved["backend"] == "local"
        and saved["job_ids"] == [job_id]
        and saved["template"] == "python-script"
    )
    assert json.loads((folder / "params.json").read_text())["args"] == ["one", "two words"]
    loaded = hpc.load_record(folder)
    assert loaded.job_ids == [job_id] and loaded.params["script"] == str(tmp_path / "run.py")
    assert loaded.scripts()["job.sh"].startswith("#!/bin/bash")
    assert [r.path for r in hpc.list_records(tmp_path)] == [record.path]
    (account,) = hpc.history([job_id], backend="local")
    assert account.state == "COMPLETED" and account.exit_code == 0
    assert account.elapsed_s > 0 and account.total_cpu_s > 0 and account.max_rss_mb > 1
    assert hpc.workdirs(backend="local") == [account.workdir] == [str(tmp_path)]


def test_failing_script_reports_its_exit_code(tmp_path):
    (tmp_path / "fail.py").write_text("raise SystemExit(3)\n")
    record = hpc.submit("python-script", {"script": "fail.py"}, backend="local")
    wait_for_jobs(record.job_ids, timeout=60, what="the failing job", backend="local")
    (account,) = hpc.history(record.job_ids, backend="local")
    assert (account.state, account.exit_code) == ("FAILED", 3)


def test_array_then_merge_runs_in_order(tmp_path):
    template = hpc.load_template(make_chain_template(tmp_path / "templates"))
    record = hpc.submit(template, {"tasks": 3, "seconds": 0}, backend="local")
    work, merge = record.jobs
    assert work.array == "0-2" and merge.after == "work"
    jobs = wait_for_jobs(record.job_ids, timeout=90, what="array and merge", backend="local")
    assert sorted(j.job_id for j in jobs) == sorted(
        [f"{work.job_id}_{i}" for i in range(3)] + [merge.job_id]
    )
    assert {j.state for j in jobs} == {"COMPLETED"}
    lines = (tmp_path / "merged.txt").read_text().splitlines()
    assert len(lines) == 4
    merge_time = float(lines[0].split()[1])
    assert all(float(line.split()[-1]) <= merge_time for line in lines[1:])
    assert {p.name for p in Path(record.path).glob("slurm-*.out")} == {
        f"slurm-{work.job_id}_{i}.out" for i in range(3)
    } | {f"slurm-{merge.job_id}.out"}


def test_failed_task_keeps_the_merge_from_running(tmp_path):
    template = hpc.load_template(make_chain_template(tmp_path / "templates"))
    record = hpc.submit(template, {"tasks": 3, "fail_task": 1, "seconds": 0}, backend="local")
    jobs = {
        j.job_id: j
        for j in wait_for_jobs(record.job_ids, timeout=90, what="the chain", backend="local")
    }
    work, merge = record.job_ids
    assert jobs[f"{work}_1"].state == "FAILED"
    assert jobs[f"{work}_0"].state == jobs[f"{work}_2"].state == "COMPLETED"
    assert (jobs[merge].state, jobs[merge].reason) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (tmp_path / "merged.txt").exists()


def test_cancel_stops_a_running_local_job(tmp_path):
    (tmp_path / "sleep.py").write_text(
        "import time\nopen('started', 'w').close()\ntime.sleep(120)\n"
    )
    record = hpc.submit("python-script", {"script": "sleep.py"}, backend="local")
    wait_for(lambda: (tmp_path / "started").exists(), timeout=60, what="the job to start")
    (running,) = hpc.status(record.job_ids, backend="local")
    assert running.state == "RUNNING"
    state = json.loads((Path(record.path) / "local-state.json").read_text())
    pid = state["jobs"][record.job_ids[0]]["pid"]
    hpc.cancel(record.job_ids, backend="local")
    wait_for_jobs(record.job_ids, timeout=30, what="the cancelled job", backend="local")
    assert [j.state for j in hpc.status(record.job_ids, backend="local")] == ["CANCELLED"]

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=10, what="the job's process to end")
    with pytest.raises(InputError, match="no such local job"):
        hpc.cancel(["local-nosuch0"], backend="local")


def test_scheduler_features_need_slurm(tmp_path):
    (tmp_path / "run.py").write_text("")
    with pytest.raises(BackendUnavailable, match="holding jobs needs SLURM"):
        hpc.submit("python-script", {"script": "run.py"}, backend="local", hold=True)
    with pytest.raises(BackendUnavailable, match="dependencies on other submissions need SLURM"):
        hpc.submit("python-script", {"script": "run.py"}, backend="local", after="123")
    with pytest.raises(BackendUnavailable, match="--test-only needs SLURM"):
        hpc.check_submission(hpc.prepare("python-script", {"script": "run.py"}, backend="local"))
    assert not (tmp_path / ".mdlma-jobs").exists() or not any((tmp_path / ".mdlma-jobs").iterdir())


def test_resubmit_repeats_a_record(tmp_path):
    (tmp_path / "run.py").write_text("print('hello')\n")
    first = hpc.submit("python-script", {"script": "run.py", "job_name": "again"}, backend="local")
    wait_for_jobs(first.job_ids, timeout=60, what="the first run", backend="local")
    second = hpc.resubmit(first.path, {"cpus": 1}, backend="local")
    assert second.path != first.path and second.params == first.params
    wait_for_jobs(second.job_ids, timeout=60, what="the second run", backend="local")
    assert "hello" in (Path(second.path) / f"slurm-{second.job_ids[0]}.out").read_text()
    assert len(hpc.list_records(tmp_path)) == 2


def test_local_resources_describe_this_machine(tmp_path):
    info = hpc.resources([tmp_path], backend="local")
    (partition,) = info.partitions
    assert partition.name == "local" and partition.cpus == os.cpu_count()
    assert info.nodes[0].memory_mb > 100
    (disk,) = info.disks
    assert disk.path == str(tmp_path) and 0 < disk.free_bytes <= disk.total_bytes


def test_cli_says_it_runs_locally(tmp_path, capsys):
    from unified_framework.cli.main import main

    (tmp_path / "run.py").write_text("print('cli')\n")
    assert (
        main(["jobs", "--backend", "local", "submit", "python-script", "--set", "script=run.py"])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err.startswith("note: ") and "ran as a local subprocess" in captured.err
    job_id = captured.out.split("job ")[1].split()[0]
    wait_for_jobs([job_id], timeout=60, what="the CLI job", backend="local")
    assert main(["jobs", "--backend", "local", "status", job_id, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["state"] == "COMPLETED"
    assert main(["jobs", "records", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["job_ids"] == [job_id]
