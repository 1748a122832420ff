"""The compare template for real: one SLURM array task per method, then the merge, equal one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest_slurm import slurm_cluster, wait_for_jobs  # noqa: F401

from unified_framework import hpc
from unified_framework.cli.main import main
from unified_framework.data.phantom import make_implant_phantom
from unified_framework.io import Volume, write_volume

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

METHODS = ["classical", "sun-9", "sun-3"]  # sun-3 waits for the model sun-9's task trains


def test_compare_array_one_task_per_method_and_merge(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs = []
    for seed in (0, 7):
        image, labels = make_implant_phantom((24, 24, 24), seed=seed)
        write_volume(tmp_path / f"i{seed}.tif", Volume(image, (5.0, 5.0, 5.0)))
        write_volume(tmp_path / f"l{seed}.tif", Volume(labels.astype(np.uint8), (5.0, 5.0, 5.0)))
        pairs.append([f"i{seed}.tif", f"l{seed}.tif"])
    budget = ["--sun-steps", "4", "--sun-input-size", "16"]
    threads = torch.get_num_threads()
    try:  # the array tasks run with one thread (cpus 1): the same here, for equal models
        assert (
            main(
                ["compare", "--train", *pairs[0], "--test", *pairs[1], "--methods", *METHODS]
                + ["--out", "local", "--threads", "1", "--device", "cpu", *budget]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    record = hpc.submit(
        "compare",
        {
            "train_pairs": " ".join(pairs[0]),
            "test_pairs": " ".join(pairs[1]),
            "methods": " ".join(METHODS),
            "out": "cluster",
            "sun_steps": 4,
            "sun_input_size": 16,
            "cpus": 1,
            "mem": "3G",
            "time": "10",
        },
        backend="slurm",
    )
    array_id, merge_id = record.job_ids

    jobs = wait_for_jobs(record.job_ids, timeout=600, what="compare array")
    logs = "\n".join(p.read_text()[-800:] for p in Path(record.path).glob("slurm-*.out"))
    assert sorted((j.job_id, j.state) for j in jobs) == sorted(
        [(f"{array_id}_{i}", "COMPLETED") for i in range(len(METHODS))] + [(merge_id, "COMPLETED")]
    ), logs
    local = json.loads((tmp_path / "local" / "comparison.json").read_text())
    cluster = json.loads((tmp_path / "cluster" / "comparison.json").read_text())
    scores = ["method", "case", "label", "dice", "hd95", "assd", "volume_ratio"]
    assert [{k: r[k] for k in scores} for r in cluster["rows"]] == [
        {k: r[k] for k in scores} for r in local["rows"]
    ]
    by_method = {m["method"]: m for m in cluster["methods"]}
    assert set(by_method) == set(METHODS)
    # one SUN model, trained by whichever task came first, reported for both methods
    assert by_method["sun-9"]["model"] == by_method["sun-3"]["model"]
    assert by_method["sun-9"]["train_seconds"] == by_method["sun-3"]["train_seconds"] > 0
    assert {by_method["sun-9"]["trained_by"], by_method["sun-3"]["trained_by"]} < {"sun-9", "sun-3"}
    assert (tmp_path / "cluster" / "comparison.png").stat().st_size > 1000
