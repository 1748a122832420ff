"""The dashboard's data logic (``dashboard/components``), without Streamlit or a cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dashboard"))  # the app imports its helpers as "components"

from components import compare, forms, joblist, logs, metrics, paths, volumes  # noqa: E402

from unified_framework.cli.dashboard import build_command  # noqa: E402
from unified_framework.errors import InputError  # noqa: E402
from unified_framework.io import write_volume  # noqa: E402


# ----------------------------------------------------------------------------- paths
def test_resolve_inside_refuses_traversal_and_symlinks(tmp_path):
    root = tmp_path / "home"
    (root / "job").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("x")
    (root / "job" / "out").symlink_to(tmp_path / "secret")
    (root / "job" / "inner").symlink_to(root / "job")

    assert paths.resolve_inside(root / "job", [root]) == (root / "job").resolve()
    assert paths.resolve_inside("job/inner", [root], base=root) == (root / "job").resolve()
    for hostile in (
        root / ".." / "secret" / "key",
        root / "job" / "out" / "key",
        "/etc/passwd",
        f"{root}/\x00",
    ):
        with pytest.raises(paths.PathRefused):
            paths.resolve_inside(hostile, [root])
    with pytest.raises(paths.PathRefused, match="absolute"):
        paths.resolve_inside("job", [root])
    # a root that is itself a symlink counts by its real location
    (tmp_path / "link-home").symlink_to(root)
    assert paths.resolve_inside(root / "job", [tmp_path / "link-home"]) == (root / "job").resolve()
    assert paths.allowed([root / "job", root / "job" / "out" / "key"], [root]) == [
        (root / "job").resolve()
    ]


def test_resolve_inside_refuses_names_too_long_for_the_file_system(tmp_path):
    for hostile in (f"{tmp_path}/{'a' * 6000}", f"{tmp_path}/" + "a/" * 3000):
        with pytest.raises(
            paths.PathRefused, match="not a usable path .file name too long."
        ) as info:
            paths.resolve_inside(hostile, [tmp_path])
        assert len(str(info.value)) < 300  # the echoed text is shortened


def test_walk_files_skips_hidden_and_symlinked_folders_and_stops_at_limits(tmp_path):
    (tmp_path / "a" / "b" / "c" / "d").mkdir(parents=True)
    for folder in ("", "a", "a/b", "a/b/c", "a/b/c/d", ".hidden"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "m.jsonl").write_text("{}")
    (tmp_path / "loop").symlink_to(tmp_path)
    found = paths.walk_files(tmp_path, lambda p: p.suffix == ".jsonl", max_depth=2)
    assert sorted(str(p.relative_to(tmp_path)) for p in found) == [
        "a/b/m.jsonl",
        "a/m.jsonl",
        "m.jsonl",
    ]
    assert (
        len(paths.walk_files(tmp_path, lambda p: p.suffix == ".jsonl", max_depth=9, limit=2)) == 2
    )


# ----------------------------------------------------------------------------- job tables
def test_parse_and_format_durations():
    assert joblist.parse_duration("1-02:03:04") == 93784
    assert joblist.parse_duration("03:04") == 184
    assert joblist.parse_duration("10") == 600  # plain minutes, as in --time
    assert np.isnan(joblist.parse_duration("UNLIMITED")) and np.isnan(joblist.parse_duration(""))
    shown = joblist.format_duration(pd.Series([93784, 59, np.nan, np.inf]))
    assert shown.tolist() == ["1-02:03:04", "00:00:59", "", ""]
    assert joblist.format_duration(3600) == "01:00:00"
    assert joblist.format_duration(pd.Series([], dtype=float)).tolist() == []


def queue_table(n: int = 6) -> pd.DataFrame:
    states = ["RUNNING", "PENDING", "PENDING", "COMPLETED", "RUNNING", "FAILED"]
    return pd.DataFrame(
        {
            "job_id": [str(100 + i) for i in range(n)],
            "name": [f"train-{i}" if i % 2 else f"predict-{i}" for i in range(n)],
            "user": ["alice" if i < 4 else "bob" for i in range(n)],
            "state": [states[i % 6] for i in range(n)],
            "reason": ["", "Priority", "JobHeldUser", "", "", "NonZeroExitCode"][:n],
            "elapsed_s": [65.0, 0, 0, 10, 3700, 5][:n],
            "time_limit_s": [600.0] * n,
            "partition": ["debug", "batch"] * (n // 2),
            "nodes": ["vm", "", "", "vm", "vm", "vm"][:n],
            "cpus": [1] * n,
            "submit_time": ["2026-01-01T10:00:00"] * n,
            "workdir": ["/data/alice/run1"] * n,
        }
    )


def test_filter_jobs_by_user_state_partition_and_search():
    table = queue_table()
    assert len(joblist.filter_jobs(table, user="alice")) == 4
    assert joblist.filter_jobs(table, states=["PENDING"])["job_id"].tolist() == ["101", "102"]
    assert joblist.filter_jobs(table, partitions=["debug"])["job_id"].tolist() == [
        "100",
        "102",
        "104",
    ]
    assert joblist.filter_jobs(table, search="HELD")["job_id"].tolist() == ["102"]
    assert joblist.filter_jobs(table, search="train", user="bob")["job_id"].tolist() == ["105"]
    assert joblist.filter_jobs(table, search=".*").empty  # plain text, not a regular expression
    assert joblist.state_counts(table) == {"RUNNING": 2, "PENDING": 2, "COMPLETED": 1, "FAILED": 1}
    view = joblist.queue_view(table)
    assert view.loc[4, "elapsed"] == "01:01:40" and view.loc[0, "limit"] == "00:10:00"


def test_filters_stay_fast_with_thousands_of_jobs():
    table = pd.concat([queue_table()] * 1000, ignore_index=True)
    shown = joblist.filter_jobs(table, states=["PENDING"], search="held", user="alice")
    assert len(shown) == 1000
    assert len(joblist.queue_view(shown)) == 1000


def test_efficiency_from_accounting():
    history = pd.DataFrame(
        {
            "job_id": ["1", "2"],
            "name": ["a", "b"],
            "user": ["u", "u"],
            "state": ["COMPLETED", "PENDING"],
            "exit_code": [0, None],
            "partition": ["debug"] * 2,
            "nodes": ["vm", ""],
            "alloc_cpus": [4, 1],
            "elapsed_s": [100.0, 0.0],
            "total_cpu_s": [200.0, None],
            "req_mem_bytes": [2.0 * 2**30, 2**30],
            "max_rss_bytes": [0.5 * 2**30, None],
            "submit_time": ["x"] * 2,
            "start_time": ["x", ""],
            "end_time": ["x", ""],
            "workdir": ["/w"] * 2,
        }
    )
    out = joblist.with_efficiency(history)
    assert out["cpu_efficiency"].tolist()[0] == 50.0 and np.isnan(out["cpu_efficiency"].tolist()[1])
    assert out["memory_efficiency"].tolist()[0] == 25.0
    assert joblist.history_view(history)["CPU eff. %"].tolist()[0] == 50.0


def test_timeline_figure():
    info = {
        "submit_time": "2026-01-01T10:00:00",
        "start_time": "2026-01-01T10:01:00",
        "end_time": "2026-01-01T10:11:00",
    }
    figure = joblist.timeline_figure(info)
    names = [trace.name for trace in figure.data]
    assert names == ["queued", "ran"]
    assert figure.data[1].x[0] == 600_000  # ten minutes in milliseconds
    assert joblist.timeline_figure({"submit_time": ""}) is None
    pending = joblist.timeline_figure(
        {"submit_time": "2026-01-01T10:00:00", "start_time": "", "end_time": ""}
    )
    assert [t.name for t in pending.data] == ["queued"]


# ----------------------------------------------------------------------------- logs and metrics
def test_tail_reads_the_end_of_growing_and_binary_logs(tmp_path):
    log = tmp_path / "slurm-1.out"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(10000)) + b"\xff\xfe partial")
    text = logs.tail(log, max_lines=3, max_bytes=1000)
    assert text.splitlines() == ["line 9998", "line 9999", "\ufffd\ufffd partial"]


def test_read_metrics_tolerates_a_line_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        json.dumps(
            {
                "step": s,
                "loss": 1 / s,
                "dice": {"1": 0.5, "2": s / 10},
                "lr": 1e-3,
                "split": "train",
            }
        )
        for s in range(1, 6)
    ]
    lines += [
        json.dumps({"step": 5, "val_loss": 0.3, "dice": {"1": 0.6, "2": 0.4}, "split": "val"}),
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + '\n{"step": 6, "loss": 0.1')  # last line still being written
    table = metrics.read_metrics(path)
    assert len(table) == 6 and table["step"].max() == 5
    assert {"dice.1", "dice.2", "loss", "val_loss", "lr"} <= set(table.columns)
    groups = metrics.metric_groups(table)
    assert (
        groups["loss"] == ["loss", "val_loss"]
        and groups["dice"] == ["dice.1", "dice.2"]
        and groups["lr"] == ["lr"]
    )
    figure = metrics.metric_figure(table, groups["dice"], "dice")
    assert {t.name for t in figure.data} == {
        "dice.1 (train)",
        "dice.2 (train)",
        "dice.1 (val)",
        "dice.2 (val)",
    }
    assert list(figure.data[-1].y) == [0.4]


# ----------------------------------------------------------------------------- volumes
def test_overlay_paints_visible_labels_with_opacity():
    grey = np.full((4, 4), 100, np.uint8)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0], labels[1, 1] = 1, 2
    rgb = volumes.overlay(grey, labels, 1.0, visible=[1])
    assert tuple(rgb[0, 0]) == volumes.label_colour(1)
    assert tuple(rgb[1, 1]) == (100, 100, 100)  # class 2 toggled off
    half = volumes.overlay(grey, labels, 0.5, visible=[1, 2])
    expected = np.round(0.5 * 100 + 0.5 * np.array(volumes.label_colour(2)))
    assert tuple(half[1, 1]) == tuple(expected.astype(int))
    assert tuple(volumes.overlay(grey, labels, 0.0, [1, 2])[0, 0]) == (100, 100, 100)
    with pytest.raises(ValueError):
        volumes.overlay(grey, labels[:2], 0.5, [1])


def test_slices_windows_and_subsampling():
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    assert volumes.orthogonal_slice(data, 1, 2).shape == (4, 6)
    assert np.array_equal(volumes.orthogonal_slice(data, 2, 99), data[:, :, 5])  # clipped
    small, step = volumes.strided(np.zeros((100, 100, 100)), 50_000)
    assert small.size <= 50_000 and step == 3
    low, high = volumes.display_window(data)
    assert 0 <= low < high <= data.max()
    grey = volumes.to_grey(np.array([[low, high, np.nan]]), (low, high))
    assert grey.tolist() == [[0, 255, 0]]
    assert volumes.slice_aspect((10.0, 5.0, 5.0), 2) == 2.0


def test_scatter_3d_draws_surface_points_of_visible_labels():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    labels[8:12, 8:12, 8:12] = 2
    figure = volumes.scatter_3d(labels, visible=[1], spacing=(2.0, 1.0, 1.0))
    assert [t.name for t in figure.data] == ["label 1"]
    z = np.asarray(figure.data[0].z)
    assert z.min() == 10.0 and z.max() == 28.0  # physical units: spacing 2 along z
    assert len(z) < 1000  # the surface, not the 1000 voxels of the cube


def test_roles_from_file_names(tmp_path):
    names = ["scan.tif", "scan_gt.tif", "prediction.nii.gz", "entropy.h5", "notes.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = volumes.find_volumes(tmp_path)
    assert [p.name for p in found] == ["entropy.h5", "prediction.nii.gz", "scan.tif", "scan_gt.tif"]
    roles = volumes.assign_roles(found)
    assert (
        roles["image"].name,
        roles["labels"].name,
        roles["uncertainty"].name,
        roles["ground_truth"].name,
    ) == ("scan.tif", "prediction.nii.gz", "entropy.h5", "scan_gt.tif")


# ----------------------------------------------------------------------------- forms
def test_widget_specs_from_a_real_form(tmp_path):
    from unified_framework.hpc.templates import load_template

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "script.sh.j2").write_text(
        "#!/bin/bash\n#SBATCH --job-name={{ job_name }}\necho hi\n"
    )
    (folder / "form.yml").write_text("""
title: Demo
description: test
parameters:
  job_name: {type: name, default: demo, help: Name.}
  workdir: {type: path, default: "", help: Folder., kind: dir}
  cpus: {type: cpus, default: 2, min: 1, max: 8, help: Cores.}
  partition: {type: partition, default: "", help: Partition.}
  gpus: {type: gpus, default: 0, help: GPUs.}
  mode: {type: choice, default: fast, choices: [fast, exact], help: Mode.}
  account: {type: account, default: proj1, locked: true, help: Billing.}
  verbose: {type: bool, default: false, help: Chatty.}
""")
    template = load_template(folder)
    partitions = pd.DataFrame({"partition": ["debug", "gpu"]})
    nodes = pd.DataFrame({"gpus_total": [0, 4]})
    specs = {
        name: forms.widget_spec(p, p.default, partitions, nodes)
        for name, p in template.parameters.items()
    }
    assert specs["cpus"].kind == "int" and specs["cpus"].value == 2
    assert specs["partition"].options == ["", "debug", "gpu"]
    assert specs["gpus"].options == [0, 1, 2, 3, 4]
    assert specs["mode"].kind == "select" and specs["mode"].options == ["fast", "exact"]
    assert specs["verbose"].kind == "bool" and specs["verbose"].value is False
    # a locked field is read-only and always shows the administrator's value
    locked = forms.widget_spec(template.parameters["account"], "other")
    assert locked.disabled and locked.value == "proj1" and "administrator" in locked.help
    # an unexpected saved value stays visible so that validation can explain it
    odd = forms.widget_spec(template.parameters["partition"], "gone", partitions, nodes)
    assert odd.options[0] == "gone"


# ----------------------------------------------------------------------------- comparison
def test_pairs_and_datasets(tmp_path):
    folder = tmp_path / "datasets" / "a"
    folder.mkdir(parents=True)
    image = np.zeros((4, 8, 8), np.float32)
    for name in ("scan.tif", "scan_gt.tif", "other.tif", "other_labels.tif"):
        write_volume(folder / name, image)
    (folder / "dataset.json").write_text(json.dumps({"class_names": ["bg", "fg"]}))
    runs = tmp_path / compare.RUNS / "x"
    runs.mkdir(parents=True)
    write_volume(runs / "seg.tif", image)
    found = compare.find_datasets(tmp_path)
    assert [(d.name, d.image.name, d.truth.name) for d in found] == [
        ("datasets/a/other", "other.tif", "other_labels.tif"),
        ("datasets/a/scan", "scan.tif", "scan_gt.tif"),
    ]
    assert found[0].class_names == ["bg", "fg"]


def test_method_commands_run_and_give_a_score_table(tmp_path):
    dataset = compare.make_phantom_dataset(tmp_path, (16, 32, 32), seed=2)
    assert dataset.class_names[0] == "background" and dataset.truth.exists()
    opts = {"method": "multi-otsu", "classes": 5, "smoothing": 1.0, "label_order": "truth"}
    method = compare.Method("classical", compare.method_name("classical", opts), opts)
    assert method.name == "multi-otsu-c5-s1"
    run_dir = compare.new_run_dir(tmp_path, dataset)
    args = compare.method_args(method, dataset, run_dir)
    assert (
        args[:2] == ["segment", "classical"]
        and "--ground-truth" in args
        and args[-4:] == ["background", "bone", "residual implant", "degradation layer"]
    )
    bad = compare.Method(
        "classical", "broken", {"method": "multi-otsu", "classes": 5, "label_order": "0,1"}
    )
    compare.save_run_plan(run_dir, dataset, [method, bad], "here")
    started = []
    scripts = {m.name: compare.write_method_script(m, dataset, run_dir) for m in (method, bad)}
    assert scripts["broken"].read_text().count("main([") == 1
    errors = compare.run_locally(scripts, on_start=lambda name, i: started.append(name))
    assert started == ["multi-otsu-c5-s1", "broken"]
    assert list(errors) == ["broken"] and "label order" in errors["broken"]
    plan, reports = compare.read_run(run_dir)
    assert plan["methods"] == ["multi-otsu-c5-s1", "broken"] and [r["name"] for r in reports] == [
        "multi-otsu-c5-s1"
    ]
    table = compare.score_table(reports)
    assert table["label"].tolist() == [1, 2, 3]
    assert table["class"].tolist() == ["bone", "residual implant", "degradation layer"]
    assert table["time_s"].iloc[0] > 0 and table["order_from_truth"].all()
    assert compare.list_runs(tmp_path, dataset) == [run_dir]


# ----------------------------------------------------------------------------- CLI
def dashboard_args(**overrides):
    args = {"socket": None, "address": "127.0.0.1", "base_url_path": "", "streamlit_options": []}
    return argparse.Namespace(**{**args, **overrides})


def test_dashboard_command_line():
    command = build_command(
        dashboard_args(
            base_url_path="/user/x/dashboard/", streamlit_options=["--theme.base", "dark"]
        ),
        8600,
    )
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("dashboard/app.py")
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.baseUrlPath"] == "/user/x/dashboard"
    assert (
        options["--server.enableXsrfProtection"] == "true"
        and options["--server.headless"] == "true"
    )
    assert options["--server.port"] == "8600" and options["--server.address"] == "127.0.0.1"
    assert command[-2:] == ["--theme.base", "dark"]
    sock = build_command(dashboard_args(socket="dash.sock"), 8501)
    assert sock[1:5] == ["-m", "uvicorn", "--uds", os.path.abspath("dash.sock")]
    assert sock[-1] == "unified_framework.hub.dashboard_asgi:app"
    for bad in (
        {"base_url_path": "user/x"},
        {"base_url_path": "/a b"},
        {"socket": "s", "address": "0.0.0.0"},
        {"socket": "s", "base_url_path": "/x"},
        {"address": "unix:///tmp/s"},
    ):
        with pytest.raises(InputError):
            build_command(dashboard_args(**bad), 8501)
    with pytest.raises(InputError, match="port"):
        build_command(dashboard_args(), 70000)


def test_composer_errors_go_to_the_field_the_error_names(tmp_path):
    # The field comes from InputError.field, not from the message: here the partition
    # parameter is called 'queue' and another parameter is called 'partition', so the
    # message "partition 'nosuch' does not exist" must still land under 'queue'.
    from unified_framework.hpc import ClusterLimits, load_template
    from unified_framework.hpc.slurm import SEP, parse_sinfo

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "script.sh.j2").write_text(
        "#!/bin/bash\n#SBATCH --job-name={{ job_name }}\necho {{ partition }}\n"
    )
    (folder / "form.yml").write_text("""
parameters:
  job_name: {type: name, default: demo, help: Name.}
  workdir: {type: path, default: ".", help: Folder., kind: dir}
  partition: {type: string, default: "x", help: A label that happens to be called partition.}
  queue: {type: partition, default: "", help: Partition.}
  mem: {type: memory, default: 1G, help: Memory.}
""")
    template = load_template(folder)
    node = SEP.join(["n1", "debug*", "idle", "8", "0/8/0/8", "32000", "30000", "(null)", "(null)"])
    partitions, _ = parse_sinfo(SEP.join(["debug*", "up", "1:00:00", "10:00"]), node)
    cluster = ClusterLimits({p.name: p for p in partitions})
    errors = forms.field_errors(
        template, {"queue": "nosuch", "mem": "9X"}, cwd=str(tmp_path), cluster=cluster
    )
    assert errors == {
        "mem": "mem: '9X' is not a memory size; use e.g. 500M, 4G, 1T",
        "queue": "partition 'nosuch' does not exist here; available: debug",
    }
    assert forms.field_errors(template, {"colour": "red"}, cwd=str(tmp_path))[""].startswith(
        "unknown parameter"
    )
