"""unified_framework.hpc against the real one-node test cluster (scripts/slurm-cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_slurm import REPO, make_chain_template, wait_for, wait_for_jobs

from unified_framework import hpc
from unified_framework.errors import InputError
from unified_framework.hpc.slurm import SlurmRejected, SlurmUnavailable

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _state(job_id: str) -> str | None:
    jobs = hpc.status([job_id], backend="slurm")
    return jobs[0].state if jobs else None


def _accounted(job_ids, count):
    """sacct rows for the jobs once slurmdbd has all of them, finished.

    slurmdbd lags behind the controller: a job's end can be recorded before its start
    (name 'allocation', no steps yet), so jobs that ran also need their batch step.
    """
    records = hpc.history(job_ids, backend="slurm")
    done = [
        r
        for r in records
        if r.state in hpc.FINISHED_STATES
        and r.end_time
        and (r.start_time is None or "batch" in r.steps or r.elapsed_s == 0)
        and r.name != "allocation"
    ]
    return records if len(done) >= count else None


# Short time limits let the backfill scheduler start test jobs next to others' long ones.


def test_job_goes_pending_running_completed(workdir):
    (workdir / "run.py").write_text(
        "import os, sys, time\nprint('hello from', os.environ['SLURM_JOB_ID'], sys.argv[1:])\ntime.sleep(4)\n"
    )
    record = hpc.submit(
        "python-script",
        {"script": "run.py", "args": "x 'y z'", "mem": "200M", "time": "5"},
        backend="slurm",
        hold=True,
    )
    (job_id,) = record.job_ids
    (pending,) = hpc.status([job_id], backend="slurm")
    assert (pending.state, pending.reason) == ("PENDING", "JobHeldUser")
    assert pending.workdir == str(workdir) and pending.name == "python-script"
    seen = ["PENDING"]
    hpc.release([job_id])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and seen[-1] != "COMPLETED":
        state = _state(job_id)
        if state and state != seen[-1]:
            seen.append(state)
        time.sleep(0.2)
    assert [s for s in seen if s in {"PENDING", "RUNNING", "COMPLETED"}] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
    ], seen
    log = Path(record.path) / f"slurm-{job_id}.out"
    assert f"hello from {job_id} ['x', 'y z']" in log.read_text()
    assert (
        "mdlma: module mdlma/unified-framework loaded" in log.read_text()
        or "using" in log.read_text()
    )
    (account,) = wait_for(lambda: _accounted([job_id], 1), timeout=60, what="accounting")
    assert (account.state, account.exit_code) == ("COMPLETED", 0)
    assert account.elapsed_s >= 4 and account.workdir == str(workdir)
    # the narrow query the dashboard uses to find job folders names the same folder once
    folders = hpc.workdirs(since="now-1days", backend="slurm")
    assert folders.count(str(workdir)) == 1 and len(folders) == len(set(folders))
    saved = hpc.load_record(record.path)
    assert saved.backend == "slurm" and saved.job_ids == [job_id] and saved.hold


def test_array_with_dependent_merge(workdir):
    template = hpc.load_template(make_chain_template(workdir / "templates"))
    record = hpc.submit(template, {"tasks": 3, "seconds": 2}, backend="slurm")
    work, merge = record.jobs
    assert merge.dependency == f"afterok:{work.job_id}"
    jobs = wait_for_jobs(record.job_ids, timeout=180, what="array and merge")
    assert sorted(j.job_id for j in jobs) == sorted(
        [f"{work.job_id}_{i}" for i in range(3)] + [merge.job_id]
    )
    assert {j.state for j in jobs} == {"COMPLETED"}
    lines = (workdir / "merged.txt").read_text().splitlines()
    assert len(lines) == 4 and all(f"of {work.job_id} " in line for line in lines[1:])
    merged_at = float(lines[0].split()[1])
    assert all(float(line.split()[-1]) <= merged_at for line in lines[1:])
    logs = {p.name for p in Path(record.path).glob("slurm-*.out")}
    assert logs == {f"slurm-{work.job_id}_{i}.out" for i in range(3)} | {
        f"slurm-{merge.job_id}.out"
    }
    records = {
        r.job_id: r
        for r in wait_for(lambda: _accounted(record.job_ids, 4), timeout=60, what="accounting")
    }
    assert {f"{work.job_id}_{i}" for i in range(3)} <= set(records)
    assert all(
        records[f"{work.job_id}_{i}"].end_time <= records[merge.job_id].start_time for i in range(3)
    )


def test_failed_task_holds_back_merge_which_can_be_cancelled(workdir):
    template = hpc.load_template(make_chain_template(workdir / "templates"))
    record = hpc.submit(template, {"tasks": 2, "fail_task": 1, "seconds": 0}, backend="slurm")
    work, merge = record.job_ids

    def merge_blocked():
        jobs = {j.job_id: j for j in hpc.status(record.job_ids, backend="slurm")}
        return (
            jobs if jobs.get(merge) and jobs[merge].reason == "DependencyNeverSatisfied" else None
        )

    jobs = wait_for(merge_blocked, timeout=120, what="the merge to be blocked")
    assert jobs[merge].state == "PENDING"
    assert jobs[f"{work}_1"].state == "FAILED" and jobs[f"{work}_0"].state == "COMPLETED"
    hpc.cancel([merge], backend="slurm")
    wait_for(lambda: _state(merge) == "CANCELLED", timeout=60, what="the cancellation")
    accounts = {
        r.job_id: r
        for r in wait_for(lambda: _accounted(record.job_ids, 3), timeout=60, what="accounting")
    }
    assert accounts[merge].state == "CANCELLED"
    assert (accounts[f"{work}_1"].state, accounts[f"{work}_1"].exit_code) == ("FAILED", 3)
    assert not (workdir / "merged.txt").exists()


def test_percent_signs_in_the_working_folder_keep_the_logs_where_expected(workdir):
    """SLURM expands %j, %x, %u, %a ... in --output, also in the working directory it
    prefixes: a folder named like this made the job die at launch with no log."""
    folder = workdir / "50%j %x %u %5a %%A 'q'"
    folder.mkdir()
    (folder / "run.py").write_text(
        "import os\nprint('task', os.environ['SLURM_ARRAY_TASK_ID'], 'in', os.getcwd())\n"
    )
    record = hpc.submit(
        "python-script",
        {"script": "run.py", "workdir": str(folder), "array": "0-1", "mem": "200M", "time": "5"},
        backend="slurm",
    )
    (array_id,) = record.job_ids
    jobs = wait_for_jobs(record.job_ids, timeout=180, what="the array tasks")
    assert sorted((j.job_id, j.state) for j in jobs) == [
        (f"{array_id}_{i}", "COMPLETED") for i in range(2)
    ]
    assert Path(record.path).parent.parent == folder
    for task in range(2):
        log = Path(record.path) / f"slurm-{array_id}_{task}.out"
        assert f"task {task} in {folder}\n" in log.read_text()
    assert {p.name for p in folder.iterdir()} == {"run.py", ".mdlma-jobs"}  # no log went elsewhere


def test_backslash_in_the_working_folder_is_refused_for_slurm(workdir, capsys):
    """SLURM drops every backslash from --output (and with it the %j): refused on one line."""
    from unified_framework.cli.main import main

    folder = workdir / "back\\slash"
    folder.mkdir()
    (folder / "run.py").write_text("")
    with pytest.raises(
        InputError, match=r"^python-script: workdir: .* contains a backslash, which SLURM removes"
    ):
        hpc.submit("python-script", {"script": "run.py", "workdir": str(folder)}, backend="slurm")
    assert (
        main(
            [
                "jobs",
                "--backend",
                "slurm",
                "submit",
                "python-script",
                "--set",
                "script=run.py",
                "--set",
                f"workdir={folder}",
            ]
        )
        == 2
    )
    message = capsys.readouterr().err
    assert message.startswith("mdlma: error: python-script: workdir: ") and message.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["run.py"]  # no record, nothing queued
    # The local backend has no such limit.
    assert hpc.prepare(
        "python-script", {"script": "run.py", "workdir": str(folder)}, backend="local"
    ).workdir == str(folder)


def test_cancel_a_running_job(workdir):
    (workdir / "sleep.py").write_text(
        "import time\nprint('started', flush=True)\ntime.sleep(300)\n"
    )
    record = hpc.submit(
        "python-script", {"script": "sleep.py", "mem": "200M", "time": "5"}, backend="slurm"
    )
    (job_id,) = record.job_ids
    wait_for(lambda: _state(job_id) == "RUNNING", timeout=120, what="the job to run")
    hpc.cancel([job_id], backend="slurm")
    wait_for(lambda: _state(job_id) == "CANCELLED", timeout=60, what="the cancellation")
    (account,) = wait_for(lambda: _accounted([job_id], 1), timeout=60, what="accounting")
    assert account.state == "CANCELLED" and account.elapsed_s < 120


def test_sacct_efficiency_matches_what_the_job_used(workdir):
    (workdir / "burn.py").write_text(
        "import resource, time\n"
        "block = bytearray(300 * 2**20)\n"  # touched: 300 MiB resident
        "start = time.process_time()\n"
        "while time.process_time() - start < 3:\n"
        "    pass\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print('cpu', usage.ru_utime + usage.ru_stime, 'rss_mb', usage.ru_maxrss / 1024, flush=True)\n"
    )
    record = hpc.submit(
        "python-script",
        {"script": "burn.py", "mem": "1G", "job_name": "burn", "time": "5"},
        backend="slurm",
    )
    (job_id,) = record.job_ids
    (account,) = wait_for(lambda: _accounted([job_id], 1), timeout=180, what="the job's accounting")
    fields = (Path(record.path) / f"slurm-{job_id}.out").read_text().split("cpu ")[1].split()
    cpu_seen, rss_seen = float(fields[0]), float(fields[2])
    assert account.state == "COMPLETED" and account.name == "burn" and account.cpus == 1
    assert account.req_mem_mb == 1024
    # The whole job (module load, python start, the loop) used at least the loop's CPU.
    assert cpu_seen <= account.total_cpu_s <= cpu_seen + 10
    assert account.cpu_efficiency == pytest.approx(
        min(1.0, account.total_cpu_s / account.elapsed_s)
    )
    assert 0.5 < account.cpu_efficiency <= 1
    assert 0.8 * rss_seen <= account.max_rss_mb
    assert account.memory_efficiency == pytest.approx(account.max_rss_mb / 1024)
    assert 0.25 < account.memory_efficiency < 1


def _phantoms(folder: Path) -> tuple[Path, Path]:
    import tifffile

    gt = np.zeros((8, 16, 16), np.uint8)
    gt[2:6, 4:12, 4:12] = 1
    pred = np.roll(gt, 1, axis=2)
    tifffile.imwrite(folder / "gt.tif", gt)
    tifffile.imwrite(folder / "pred.tif", pred)
    return folder / "pred.tif", folder / "gt.tif"


def test_score_template_runs_mdlma_score(workdir):
    _phantoms(workdir)
    record = hpc.submit(
        "score",
        {"pred": "pred.tif", "gt": "gt.tif", "no_surface": True, "mem": "1G", "time": "5"},
        backend="slurm",
    )
    jobs = wait_for_jobs(record.job_ids, timeout=240, what="the score job")
    log = (Path(record.path) / f"slurm-{record.job_ids[0]}.out").read_text()
    assert [j.state for j in jobs] == ["COMPLETED"], log
    (row,) = json.loads((workdir / "score.json").read_text())["rows"]
    assert row["label"] == 1 and row["dice"] == pytest.approx(
        0.875
    )  # a box 8 wide shifted by one voxel


MINIMAL = {
    "python-script": {"script": "run.py"},
    "score": {"pred": "pred.tif", "gt": "gt.tif"},
    "sun-train": {"images": "pred.tif", "labels": "gt.tif", "time": "00:30:00"},
    "sun-predict": {"volume": "pred.tif", "model": "gt.tif"},
    "jupyter": {"port": 8899},
    "histology-match": {"volume": "pred.tif", "section": "gt.tif"},
    "quantify": {"labels": "gt.tif"},
    "denoise": {"input": "pred.tif"},
    "search": {"pipeline": "run.py", "image": "pred.tif", "truth": "gt.tif"},
    "pipeline": {"pipeline": "run.py", "input": "pred.tif"},
    "nnunet-train": {"partition": "batch"},  # its default time (24 h) is over debug's hour
    "nnunet-predict": {"volume": "pred.tif", "model": "gt.tif"},
    "compare": {"train_pairs": "pred.tif gt.tif", "test_pairs": "pred.tif gt.tif", "time": "30"},
}


def test_every_template_is_accepted_by_slurm(workdir):
    _phantoms(workdir)
    (workdir / "run.py").write_text("")
    submitted = []
    try:
        for name, params in MINIMAL.items():
            prepared = hpc.prepare(name, {**params, "mem": "500M", "cpus": 1}, backend="slurm")
            answers = hpc.check_submission(prepared)
            assert len(answers) == len(prepared.scripts)
            assert all(" to start at " in a for a in answers), answers
            record = hpc.submit(prepared, hold=True)
            submitted += record.job_ids
            jobs = hpc.status(record.job_ids, backend="slurm")
            assert jobs and {j.state for j in jobs} == {"PENDING"}, (name, jobs)
            if name == "sun-predict":
                assert len([j for j in jobs if j.array_job_id == record.job_ids[0]]) == 3
                assert (
                    hpc.load_record(record.path).jobs[1].dependency
                    == f"afterok:{record.job_ids[0]}"
                )
    finally:
        if submitted:
            hpc.cancel(submitted, backend="slurm")
    wait_for(
        lambda: all(j.state == "CANCELLED" for j in hpc.status(submitted, backend="slurm")),
        timeout=60,
        what="the cancellations",
    )


def test_owner_only_status(slurm_test_user):
    out = subprocess.run(
        [
            "runuser",
            "-u",
            slurm_test_user,
            "--",
            "sbatch",
            "--parsable",
            "--hold",
            "--job-name=not-mine",
            "--chdir=/tmp",
            "--output=/dev/null",
            "--wrap=true",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    theirs = out.split(";")[0]
    try:
        mine = hpc.status(backend="slurm")
        assert theirs not in {j.job_id for j in mine}
        assert all(j.user == hpc.current_user() for j in mine)
        everyone = {j.job_id: j for j in hpc.status(all_users=True, backend="slurm")}
        assert everyone[theirs].user == slurm_test_user and everyone[theirs].name == "not-mine"
        # Asked for by id, someone else's job is not shown either, only marked unknown.
        assert [(j.job_id, j.state) for j in hpc.status([theirs], backend="slurm")] == [
            (theirs, "UNKNOWN")
        ]
    finally:
        hpc.cancel([theirs], backend="slurm")


def test_slurm_errors_come_back_clearly(workdir):
    (workdir / "run.py").write_text("")
    with pytest.raises(
        InputError, match=r"partition 'nosuch' does not exist here; available: debug, batch"
    ):
        hpc.prepare("python-script", {"script": "run.py", "partition": "nosuch"}, backend="slurm")
    with pytest.raises(InputError, match="partition 'debug' has no GPUs"):
        hpc.prepare("python-script", {"script": "run.py", "gpus": 1}, backend="slurm")
    with pytest.raises(InputError, match="exceeds partition 'debug''s limit 1:00:00"):
        hpc.prepare("python-script", {"script": "run.py", "time": "02:00:00"}, backend="slurm")
    # Without our checks SLURM itself refuses; its message comes through on one line.
    unchecked = hpc.prepare(
        "python-script",
        {"script": "run.py", "partition": "nosuch"},
        backend="slurm",
        check_cluster=False,
    )
    with pytest.raises(SlurmRejected, match="sbatch: .*[Ii]nvalid partition") as info:
        hpc.submit(unchecked)
    assert "\n" not in str(info.value)
    assert not (workdir / ".mdlma-jobs").exists() or not any((workdir / ".mdlma-jobs").iterdir())
    with pytest.raises(InputError, match="job id 'abc'"):
        hpc.cancel(["abc"], backend="slurm")
    with pytest.raises(SlurmRejected, match="scancel: .*[Ii]nvalid job id"):
        hpc.cancel(["999999"], backend="slurm")


def test_unreachable_controller_is_an_error_not_dead_jobs(slurm_cluster, monkeypatch, tmp_path):
    conf = (slurm_cluster / "etc" / "slurm.conf").read_text()
    bad = tmp_path / "slurm.conf"
    # Nothing listens on this port; a short MessageTimeout keeps each attempt at ~1 s.
    bad.write_text(conf.replace("SlurmctldPort=6817", "SlurmctldPort=6999") + "MessageTimeout=2\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    started = time.monotonic()
    with pytest.raises(
        SlurmUnavailable, match="squeue: SLURM did not answer .*job states are unknown"
    ):
        hpc.status(["1"], backend="slurm")
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_brief_controller_outage_keeps_job_states(workdir, slurm_cluster):
    record = hpc.submit("python-script", {"script": _sleeper(workdir)}, backend="slurm", hold=True)
    (job_id,) = record.job_ids
    pid = int((slurm_cluster / "run" / "slurmctld.pid").read_text())
    os.kill(pid, 15)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="slurmctld to stop")
    restart = threading.Timer(
        2.0,
        lambda: subprocess.run(
            [str(REPO / "scripts" / "slurm-cluster"), "start"], capture_output=True, timeout=300
        ),
    )
    restart.start()
    try:
        jobs = hpc.status([job_id], backend="slurm")  # asked while the controller is down
    finally:
        restart.join()
        hpc.cancel([job_id], backend="slurm")
    assert [(j.job_id, j.state) for j in jobs] == [(job_id, "PENDING")]


def _sleeper(folder: Path) -> str:
    (folder / "sleep.py").write_text("import time\ntime.sleep(60)\n")
    return "sleep.py"


def test_resources_from_sinfo(workdir):
    info = hpc.resources([workdir], backend="slurm")
    partitions = {p.name: p for p in info.partitions}
    assert {"debug", "batch"} <= set(partitions) and partitions["debug"].default
    assert partitions["debug"].max_time_s == 3600 and partitions["batch"].max_time == "7-00:00:00"
    (node,) = info.nodes
    assert node.cpus == os.cpu_count() and node.gpus == 0 and node.memory_mb > 1000
    assert set(node.partitions) >= {"debug", "batch"}
    assert info.disks[0].free_bytes > 0
    # The dashboard's "GPUs in use" column: sinfo's GresUsed, read by the SLURM layer.
    from unified_framework.hpc.slurm import gpus_in_use

    assert gpus_in_use() == {node.name: 0}


def test_cli_submit_status_history_cancel(workdir, capsys):
    from unified_framework.cli.main import main

    (workdir / "run.py").write_text("print('via cli')\n")
    assert (
        main(
            [
                "jobs",
                "--backend",
                "slurm",
                "submit",
                "python-script",
                "--set",
                "script=run.py",
                "--set",
                "mem=200M",
                "--set",
                "time=5",
                "--hold",
                "--json",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    (job_id,) = record["job_ids"]
    assert main(["jobs", "--backend", "slurm", "status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "PENDING"
    assert main(["jobs", "--backend", "slurm", "cancel", job_id]) == 0
    assert f"cancelled {job_id}" in capsys.readouterr().out
    wait_for(lambda: _accounted([job_id], 1), timeout=60, what="accounting")
    assert main(["jobs", "--backend", "slurm", "history", job_id]) == 0
    table = capsys.readouterr().out
    assert "CPU-EFF" in table and job_id in table and "CANCELLED" in table
    assert main(["jobs", "--backend", "slurm", "resources"]) == 0
    assert "debug*" in capsys.readouterr().out


@pytest.mark.slow
def test_sun_train_then_predict_array_and_merge(workdir):
    """The SUN templates for real, on a tiny phantom and a two-step model."""
    subprocess.run(
        [
            str(REPO / ".mdlma" / "venv" / "bin" / "mdlma"),
            "sample",
            "implant",
            "img.tif",
            "--gt",
            "lab.tif",
            "--shape",
            "16",
            "32",
            "32",
        ],
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    tiny = "--depth 2 --width 4 --input-size 16 --batch-size 2 --val-every 1"
    train = hpc.submit(
        "sun-train",
        {
            "images": "img.tif",
            "labels": "lab.tif",
            "model": "m.pt",
            "axes": 3,
            "steps": 2,
            "extra_args": tiny,
            "time": "10",
            "mem": "2G",
            "cpus": 1,
        },
        backend="slurm",
    )
    jobs = wait_for_jobs(train.job_ids, timeout=300, what="sun-train")
    log = (Path(train.path) / f"slurm-{train.job_ids[0]}.out").read_text()
    assert [j.state for j in jobs] == ["COMPLETED"], log[-2000:]
    assert (workdir / "m.pt").is_file()
    predict = hpc.submit(
        "sun-predict",
        {
            "volume": "img.tif",
            "model": "m.pt",
            "axes": 3,
            "out": "seg.tif",
            "mem": "2G",
            "merge_mem": "2G",
            "cpus": 1,
            "time": "5",
            "merge_time": "5",
        },
        backend="slurm",
    )
    array_id, merge_id = predict.job_ids
    jobs = wait_for_jobs(predict.job_ids, timeout=400, what="sun-predict")
    logs = "\n".join(p.read_text()[-800:] for p in Path(predict.path).glob("slurm-*.out"))
    assert sorted((j.job_id, j.state) for j in jobs) == sorted(
        [(f"{array_id}_{i}", "COMPLETED") for i in range(3)] + [(merge_id, "COMPLETED")]
    ), logs
    import tifffile

    assert tifffile.imread(workdir / "seg.tif").shape == (16, 32, 32)
