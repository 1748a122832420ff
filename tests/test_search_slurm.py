"""A tiny parameter search whose trials run in dask workers submitted to the real test SLURM cluster."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest_slurm import slurm_cluster, wait_for  # noqa: F401 - fixture

from unified_framework.data import make_implant_phantom
from unified_framework.io import write_volume
from unified_framework.search import load_trials, run_search

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_search_on_slurm_through_dask_jobqueue(tmp_path):
    image, labels = make_implant_phantom((8, 24, 24), seed=1)
    write_volume(tmp_path / "img.tif", image)
    write_volume(tmp_path / "gt.tif", labels)
    (tmp_path / "pipe.yml").write_text(
        yaml.safe_dump(
            {
                "steps": [
                    {
                        "step": "segment.multi-otsu",
                        "params": {
                            "classes": {"choices": [3, 4]},
                            "smoothing": {"low": 0.0, "high": 1.5},
                        },
                    }
                ]
            }
        )
    )
    study = tmp_path / "study"
    result = run_search(
        study,
        tmp_path / "pipe.yml",
        [[str(tmp_path / "img.tif"), str(tmp_path / "gt.tif")]],
        trials=2,
        executor="slurm",
        workers=1,
        slurm={"memory": "1G", "walltime": "00:10:00"},
    )
    assert result["done"] == 2 and result["failed"] == 0
    assert all(t["score"] > 0 for t in load_trials(study))
    logs = list((study / "slurm-logs").glob("*"))
    assert logs, "the worker ran as a SLURM job and wrote its log into the study"
    jobs = {p.stem.split("-")[-1] for p in logs}

    def job_names() -> str:
        accounting = subprocess.run(
            ["sacct", "-n", "-X", "-o", "JobName", "-j", ",".join(jobs)],
            capture_output=True,
            text=True,
        )
        # slurmdbd shows the placeholder name "allocation" until the job's start record
        # arrives: wait for the real one.
        return "" if "allocation" in accounting.stdout else accounting.stdout

    assert "mdlma-sea" in wait_for(job_names, timeout=60, what="the job's accounting")
