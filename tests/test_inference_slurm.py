"""The infer template for real: a 2-task SLURM array and its merge job equal one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest_slurm import slurm_cluster, wait_for_jobs  # noqa: F401
from test_inference import MB, grey_image, tiny_sun

from unified_framework import hpc
from unified_framework.inference import infer, prepare

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_infer_array_of_two_tasks_and_merge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    settings = dict(patch=(16, 16), budget=2 * MB, block=(32, 32))
    single, _ = infer(model, image, tmp_path / "single.zarr", **settings)
    prepare(tmp_path / "seg.zarr.work", model, image, **settings)
    record = hpc.submit(
        "infer",
        {
            "model": str(model),
            "image": image,
            "out": "seg.zarr",
            "work_dir": "seg.zarr.work",
            "tasks": 2,
            "cpus": 1,
            "mem": "2G",
            "merge_mem": "1G",
            "time": "5",
            "merge_time": "5",
        },
        backend="slurm",
    )
    array_id, merge_id = record.job_ids

    jobs = wait_for_jobs(record.job_ids, timeout=400, what="infer array")
    logs = "\n".join(p.read_text()[-800:] for p in Path(record.path).glob("slurm-*.out"))
    assert sorted((j.job_id, j.state) for j in jobs) == sorted(
        [(f"{array_id}_{i}", "COMPLETED") for i in range(2)] + [(merge_id, "COMPLETED")]
    ), logs
    a = zarr.open_group(str(single), mode="r")
    b = zarr.open_group(str(tmp_path / "seg.zarr"), mode="r")
    assert np.abs(a["probabilities"][:] - b["probabilities"][:]).max() <= 1e-6
    assert np.array_equal(a["0"][:], b["0"][:])
    assert not (tmp_path / "seg.zarr.work").exists()


def test_dask_jobqueue_workers_equal_one_process(tmp_path, monkeypatch, capsys):
    """``mdlma infer --dask-slurm 2``: two SLURM worker jobs of a dask-jobqueue SLURMCluster."""
    from unified_framework.cli.main import main

    monkeypatch.chdir(tmp_path)
    model = str(tiny_sun(tmp_path))
    image = grey_image(tmp_path)
    common = ["--patch", "16", "16", "--budget", "64", "--block", "36", "44"]
    assert main(["infer", model, image, "--out", "local.zarr", *common]) == 0
    assert main(["infer", model, image, "--out", "dask.zarr", *common, "--dask-slurm", "2"]) == 0
    a = zarr.open_group("local.zarr", mode="r")["probabilities"][:]
    b = zarr.open_group("dask.zarr", mode="r")["probabilities"][:]
    assert np.abs(a - b).max() <= 1e-6
