"""Every dashboard page driven with Streamlit's AppTest against the real test SLURM cluster.

The jobs are real SLURM jobs on the one-node cluster of ``scripts/slurm-cluster``
(fixture ``slurm_cluster``); nothing is mocked. Each page gets a happy path and bad
input.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from apptest_pages import APP, assert_clean, open_page, use_home
from conftest_slurm import slurm_cluster, slurm_test_user, wait_for  # noqa: F401 - fixtures
from dashboard_result_job import result_script
from streamlit.testing.v1 import AppTest

from unified_framework import hpc

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm
#: Seconds a test job may take, queueing included (the test cluster may be shared).
JOB_WAIT_S = 600


@pytest.fixture
def home(tmp_path, monkeypatch, slurm_cluster) -> Path:  # noqa: F811
    """A fresh MDLMA_HOME readable by the cluster's jobs; caches of earlier tests dropped."""
    folder = tmp_path / "home"
    folder.mkdir()
    return use_home(folder, monkeypatch)


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def table_with(app: AppTest, *columns: str):
    """The first dataframe shown that has all these columns (display-only tables carry no key)."""
    for frame in app.dataframe:
        value = frame.value
        if set(columns) <= set(value.columns):
            return value
    raise AssertionError(f"no table with columns {columns}")


def write_script(folder: Path, body: str, name: str = "job.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def cancel_unfinished(job_id: str) -> None:
    """Cancel a test job that is still queued or running (after a failure or timeout)."""
    with contextlib.suppress(hpc.SlurmError):
        if any(not job.finished for job in hpc.status([job_id])):
            hpc.cancel([job_id])


def submit_held_array(home: Path, tasks: int, name: str) -> str:
    script = write_script(home, "print('never runs')\n", "held.py")
    record = hpc.submit(
        "python-script",
        {
            "job_name": name,
            "workdir": str(home),
            "script": str(script),
            "array": f"0-{tasks - 1}",
            "time": "00:01:00",
            "mem": "100M",
        },
        hold=True,
    )
    return record.job_ids[0]


# ----------------------------------------------------------------------------- resources
def test_resources_shows_the_cluster_and_storage(home):
    partitions, nodes = hpc.resources().partitions, hpc.resources().nodes
    app = open_page("resources")
    assert_clean(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Free CPUs"].endswith(f"/ {sum(n.cpus for n in nodes)}")
    assert metrics["Nodes up"] == f"{len(nodes)} / {len(nodes)}"
    table = table_with(app, "partition", "time_limit")
    assert set(table["partition"]) == {p.name for p in partitions}
    storage = table_with(app, "folder", "free GiB")
    assert str(home) in set(storage["folder"]) and (storage["free GiB"] > 0).all()


def test_resources_reports_a_broken_configuration(home, monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("home = [unterminated\n")
    monkeypatch.setenv("MDLMA_CONFIG", str(config))
    app = AppTest.from_file(str(APP), default_timeout=90).run()  # Resources is the start page
    assert_clean(app)
    assert any("config.toml: not valid TOML" in e for e in texts(app.error))
    assert not app.metric


def test_resources_reports_missing_slurm_in_one_line(home, monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[slurm]\nbackend = "slurm"\n')
    monkeypatch.setenv("MDLMA_CONFIG", str(config))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch/squeue here
    app = open_page("resources")
    assert_clean(app)
    assert any("SLURM is not installed" in e for e in texts(app.error))


# ----------------------------------------------------------------------------- my jobs
def test_jobs_filter_search_and_cancel_with_confirmation(home):
    name = f"dash-{uuid.uuid4().hex[:6]}"
    array_id = submit_held_array(home, 6, name)
    try:
        app = open_page("jobs")
        assert_clean(app)
        app.text_input(key="jobs_search").set_value(name).run()
        table = app.dataframe(key="jobs_queue_table").value
        assert sorted(table["job"]) == [f"{array_id}_{i}" for i in range(6)]
        assert set(table["state"]) == {"PENDING"} and set(table["reason"]) == {"JobHeldUser"}
        assert set(table["limit"]) == {"00:01:00"}
        app.multiselect(key="jobs_states").set_value(["RUNNING"]).run()
        assert app.dataframe(key="jobs_queue_table").value.empty
        app.multiselect(key="jobs_states").set_value(["PENDING"]).run()

        # nothing selected: cancelling is not offered
        assert app.button(key="jobs_cancel").disabled
        app.session_state["jobs_queue_table"] = {
            "selection": {"rows": [0, 1], "columns": [], "cells": []}
        }
        app.run()
        assert app.button(key="jobs_cancel").label == "Cancel selected (2)"
        app.button(key="jobs_cancel").click().run()
        assert any("Cancel 2 job(s)" in w for w in texts(app.warning))
        app.button(key="jobs_cancel_abort").click().run()  # "Keep them"
        assert not hpc.status([f"{array_id}_0"])[0].finished

        app.session_state["jobs_queue_table"] = {
            "selection": {"rows": [0, 1], "columns": [], "cells": []}
        }
        app.run()
        app.button(key="jobs_cancel").click().run()
        app.button(key="jobs_cancel_confirm").click().run()
        assert_clean(app)
        assert any("Cancelled 2 job(s)" in s for s in texts(app.success))
        # cancelled tasks that never ran leave the queue; the others stay held
        states = {j.job_id: j.state for j in hpc.status([array_id])}
        assert sorted(states) == [f"{array_id}_{i}" for i in range(2, 6)] and set(
            states.values()
        ) == {"PENDING"}
        app.run()
        assert sorted(app.dataframe(key="jobs_queue_table").value["job"]) == sorted(states)
    finally:
        hpc.cancel([array_id])


def test_jobs_search_is_plain_text_and_history_has_efficiency(home):
    # busy for 3 s so that accounting samples its CPU time and memory (every second here)
    script = write_script(
        home, "import time\nstart = time.time()\nwhile time.time() - start < 3:\n    pass\n"
    )
    record = hpc.submit(
        "python-script",
        {
            "job_name": "dash-eff",
            "workdir": str(home),
            "script": str(script),
            "time": "00:02:00",
            "mem": "200M",
        },
    )
    job_id = record.job_ids[0]
    try:
        wait_for(
            lambda: (s := hpc.history([job_id])) and s[0].state == "COMPLETED" and s[0].max_rss_mb,
            timeout=JOB_WAIT_S,
            what=f"job {job_id} to complete with accounting data",
        )
    finally:
        cancel_unfinished(job_id)
    # The page asks for a time window (sacct --starttime), not for the job id: wait until
    # that query lists the job too, so that a failure below is the page's, not accounting's.
    from components import cluster

    wait_for(
        lambda: job_id in set(cluster.history(hpc.current_user(), 7)["job_id"]),
        timeout=60,
        what=f"job {job_id} in the 7-day accounting window",
    )
    app = open_page("jobs")
    app.text_input(key="jobs_search").set_value("[(*").run()  # not a regular expression
    assert_clean(app)
    assert app.dataframe(key="jobs_queue_table").value.empty
    app.text_input(key="jobs_search").set_value(job_id).run()
    history = app.dataframe(key="jobs_history_table").value
    assert (history["job"] == job_id).any(), (
        f"job {job_id} not in the history table:\n{history.to_string()}"
    )
    row = history[history["job"] == job_id].iloc[0]
    assert row["state"] == "COMPLETED" and row["CPUs"] == 1
    assert 0 < row["CPU eff. %"] <= 100 and row["mem. eff. %"] > 0


def test_jobs_are_owner_only_unless_all_users_is_on(home, slurm_test_user):  # noqa: F811
    name = f"other-{uuid.uuid4().hex[:6]}"
    job_id = subprocess.run(
        [
            "su",
            slurm_test_user,
            "-c",
            f"sbatch --parsable --hold --job-name={name} --chdir=/tmp --wrap 'sleep 1'",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        app = open_page("jobs")
        app.text_input(key="jobs_search").set_value(name).run()
        assert app.dataframe(key="jobs_queue_table").value.empty
        app.toggle(key="jobs_all_users").set_value(True).run()
        table = app.dataframe(key="jobs_queue_table").value
        assert table["job"].tolist() == [job_id] and table["user"].tolist() == [slurm_test_user]
        app.session_state["jobs_queue_table"] = {
            "selection": {"rows": [0], "columns": [], "cells": []}
        }
        app.run()
        assert app.button(key="jobs_cancel").disabled  # someone else's job
        # and the viewer does not open it either
        viewer = open_page("viewer", job=job_id)
        assert any("not found among your jobs" in e for e in texts(viewer.error))
    finally:
        subprocess.run(["scancel", job_id], check=False)


# ----------------------------------------------------------------------------- composer
def composer(template: str) -> AppTest:
    app = open_page("composer", template=template)
    assert app.selectbox(key="composer_template").value == template
    return app


def field(app: AppTest, name: str):
    return app.text_input(key=f"composer_python-script_{name}")


def test_composer_explains_invalid_values_and_never_submits_them(home):
    write_script(home, "print('x')\n", "ok.py")
    app = composer("python-script")
    assert_clean(app)
    assert any(e.startswith("script:") and "required" in e for e in texts(app.error))
    field(app, "script").set_value("ok.py")
    field(app, "job_name").set_value("bad; rm -rf ~")
    field(app, "time").set_value("99-00:00:00")
    field(app, "mem").set_value("lots")
    app.number_input(key="composer_python-script_cpus").set_value(999)
    app.run()
    errors = texts(app.error)
    for expected in (
        "job_name",
        "time: 99-00:00:00 is above the maximum",
        "mem: 'lots' is not a memory size",
        "cpus",
    ):
        assert any(e.startswith(expected) for e in errors), (expected, errors)
    assert app.button(key="composer_submit").disabled
    assert not app.code  # no script preview for invalid values
    assert not (home / ".mdlma-jobs").exists()


def test_composer_preview_submit_link_save_and_copy(home):
    write_script(home, "print('hello from the composer')\n", "hello.py")
    app = composer("python-script")
    field(app, "script").set_value("hello.py")
    field(app, "time").set_value("00:02:00")
    app.selectbox(key="composer_python-script_partition").set_value("debug")
    app.run()
    assert_clean(app)
    assert not app.error
    preview = app.code[0].value
    assert "#SBATCH --partition=debug" in preview and "#SBATCH --time=00:02:00" in preview
    assert f"python {home / 'hello.py'}" in preview
    app.button(key="composer_save").click().run()
    app.button(key="composer_submit").click().run()
    assert_clean(app)
    template, job_ids, record_path = app.session_state["composer_submitted"]
    assert any(f"Submitted job {job_ids[0]}" in s for s in texts(app.success))
    link = [p for p in app.get("page_link") if "viewer" in p.proto.page]
    assert link and f"job={job_ids[0]}" in link[0].proto.query_string
    record = hpc.load_record(record_path)
    assert record.workdir == str(home) and record.params["partition"] == "debug"  # used in place

    # saved settings come back in a new session
    again = composer("python-script")
    assert field(again, "script").value == "hello.py" and field(again, "time").value == "00:02:00"
    # copying the earlier job restores its values after a reset
    again.button(key="composer_reset").click().run()
    assert field(again, "script").value == ""
    again.selectbox(key="composer_copy_choice").set_value(record_path)
    again.button(key="composer_copy_button").click().run()
    assert field(again, "script").value == str(home / "hello.py")
    assert any("Copied the settings" in s for s in texts(again.success))


def test_composer_copy_link_refuses_records_outside_the_job_roots(home, tmp_path):
    app = open_page("composer", template="python-script", copy=str(home / ".." / ".." / "etc"))
    assert_clean(app)
    assert any("outside your job folders" in e for e in texts(app.error))


def test_composer_shows_locked_fields_read_only(home):
    app = composer("jupyter")
    locked = [w for w in app.text_input if w.label.endswith("🔒")]
    assert locked and all(w.disabled for w in locked)


# ----------------------------------------------------------------------------- viewer
def run_result_job(home: Path) -> str:
    script = write_script(home, result_script(pause_s=0))  # nothing watches it run here
    record = hpc.submit(
        "python-script",
        {
            "job_name": "dash-result",
            "workdir": str(home),
            "script": str(script),
            "time": "00:05:00",
            "mem": "1G",
        },
    )
    job_id = record.job_ids[0]
    try:
        wait_for(
            lambda: hpc.status([job_id])[0].state in hpc.FINISHED_STATES,
            timeout=JOB_WAIT_S,
            what=f"job {job_id}",
        )
    finally:
        cancel_unfinished(job_id)
    assert hpc.status([job_id])[0].state == "COMPLETED", [
        p.read_text() for p in home.rglob("slurm-*.out")
    ]
    return job_id


def test_viewer_shows_log_metrics_volumes_and_scores(home):
    job_id = run_result_job(home)
    app = open_page("viewer", job=job_id)
    assert_clean(app)
    assert {m.label: m.value for m in app.metric}["State"] == "COMPLETED"
    assert any("results written; best loss" in c for c in texts(app.code))
    # role guesses from the file names
    assert Path(app.selectbox(key="viewer_role_image").value).name == "scan.tif"
    assert Path(app.selectbox(key="viewer_role_labels").value).name == "prediction.tif"
    assert Path(app.selectbox(key="viewer_role_uncertainty").value).name == "prediction_entropy.tif"
    assert Path(app.selectbox(key="viewer_role_ground_truth").value).name == "scan_gt.tif"
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
        for c in app.get("plotly_chart")
    ]
    assert {
        "loss",
        "dice",
        "marker_fraction",
        "z = 16",
        "uncertainty z = 16 (prediction_entropy.tif)",
    } <= set(titles)
    scores = table_with(app, "label", "dice", "hd95")
    assert (
        scores["label"].tolist() == [1, 2, 3]
        and scores.loc[scores["label"] == 2, "dice"].iloc[0] > 0.8
    )
    # class toggles and axis switch
    app.pills(key="viewer_classes").set_value([2]).run()
    app.segmented_control(key="viewer_axis").set_value(2).run()
    app.slider(key="viewer_slice_2").set_value(5).run()
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
        for c in app.get("plotly_chart")
    ]
    assert "x = 5" in titles and "z = 16" not in titles
    app.segmented_control(key="viewer_layout").set_value("three").run()
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
        for c in app.get("plotly_chart")
    ]
    assert {"z = 16", "y = 32", "x = 32", "uncertainty x = 32 (prediction_entropy.tif)"} <= set(
        titles
    )
    app.toggle(key="viewer_3d").set_value(True).run()
    assert_clean(app)
    figure = json.loads(app.get("plotly_chart")[-1].proto.spec)
    assert [t["name"] for t in figure["data"]] == ["residual implant"] and figure["data"][0][
        "type"
    ] == "scatter3d"


def test_viewer_refuses_paths_outside_the_job_roots(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.tif").write_bytes(b"")
    (home / "escape").symlink_to(outside)
    from components.cluster import (
        recorded_workdirs,
    )  # precondition: no earlier job ran above tmp_path

    assert not any(outside.is_relative_to(root) for root in recorded_workdirs(hpc.current_user()))
    app = open_page("viewer")
    app.segmented_control(key="viewer_mode").set_value("Folder").run()
    for hostile in (f"{home}/../outside", f"{home}/escape", "/etc", "relative/path"):
        app.text_input(key="viewer_folder").set_value(hostile).run()
        assert_clean(app)
        assert any(
            "outside your job folders" in e or "absolute path" in e for e in texts(app.error)
        ), hostile
        assert not app.tabs
    app.text_input(key="viewer_folder").set_value(str(home)).run()
    assert not app.error and app.tabs


def test_viewer_refuses_a_folder_name_too_long_for_the_file_system(home):
    app = open_page("viewer")
    app.segmented_control(key="viewer_mode").set_value("Folder").run()
    app.text_input(key="viewer_folder").set_value(f"{home}/{'a' * 6000}").run()
    assert_clean(app)
    assert any("not a usable path (file name too long)" in e for e in texts(app.error))


def test_viewer_unknown_or_hostile_job_ids(home):
    for job in ("999999999", "1;ls", "../../etc"):
        app = open_page("viewer", job=job)
        assert_clean(app)
        assert any("not found among your jobs" in e for e in texts(app.error)), job


# ----------------------------------------------------------------------------- comparison
def make_dataset(app: AppTest) -> AppTest:
    for axis, size in (("z", 16), ("y", 48), ("x", 48)):
        app.number_input(key=f"compare_phantom_{axis}").set_value(size)
    app.button(key="compare_phantom_create").click().run()
    return app


def test_compare_runs_locally_and_scores(home):
    app = make_dataset(open_page("compare"))
    assert_clean(app)
    assert app.selectbox(key="compare_dataset").value == "datasets/phantom-16x48x48-seed0/image"
    app.button(key="compare_run").click().run(timeout=180)
    assert_clean(app)
    table = table_with(app, "method", "dice", "time_s")
    assert sorted(set(table["method"])) == ["multi-otsu-c5-s1", "watershed-c5-s1"]
    assert set(table["class"]) == {"bone", "residual implant", "degradation layer"}
    implant = table[table["class"] == "residual implant"]
    assert (implant["dice"] > 0.8).all() and (table["time_s"] > 0).all()
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
        for c in app.get("plotly_chart")
    ]
    assert "ground truth" in titles and "watershed-c5-s1" in titles and "Dice per class" in titles


def test_compare_rejects_bad_settings(home):
    app = make_dataset(open_page("compare"))
    app.text_input(key="compare_order").set_value("0,0,x").run()
    assert (
        any("Label order" in e for e in texts(app.error)) and app.button(key="compare_run").disabled
    )
    app.text_input(key="compare_order").set_value("0,1").run()
    assert any("2 class numbers given, but 5" in e for e in texts(app.error))
    app.text_input(key="compare_order").set_value("truth").run()
    app.multiselect(key="compare_classical").set_value([]).run()
    assert (
        any("at least one method" in e for e in texts(app.error))
        and app.button(key="compare_run").disabled
    )


def test_compare_runs_as_slurm_jobs(home):
    app = make_dataset(open_page("compare"))
    app.multiselect(key="compare_classical").set_value(["watershed"])
    app.segmented_control(key="compare_where").set_value("cluster").run()
    app.text_input(key="compare_mem").set_value("1G")
    app.button(key="compare_run").click().run()
    assert_clean(app)
    run_dir = Path(app.session_state["compare_run_dir"])
    plan = json.loads((run_dir / "run.json").read_text())
    job_id = plan["jobs"]["watershed-c5-s1"]
    assert plan["where"] == "cluster" and hpc.load_record(next((run_dir / ".mdlma-jobs").iterdir()))
    try:
        wait_for(
            lambda: hpc.status([job_id])[0].state in hpc.FINISHED_STATES,
            timeout=JOB_WAIT_S,
            what=f"job {job_id}",
        )
    finally:
        cancel_unfinished(job_id)
    app.button(key="compare_refresh").click().run()
    assert_clean(app)
    table = table_with(app, "method", "dice", "time_s")
    assert set(table["method"]) == {"watershed-c5-s1"} and (table["dice"].notna()).all()
