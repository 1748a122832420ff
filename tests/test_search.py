"""Pipelines as YAML, the search engine (optuna + dask), resumable studies and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from unified_framework.cli.main import main
from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import read_volume, write_volume
from unified_framework.search import best_trials, load_pipeline, load_trials, run_search
from unified_framework.search.landscape import landscape

PIPELINE = {
    "name": "smooth-otsu",
    "steps": [
        {
            "step": "denoise.gaussian",
            "name": "smooth",
            "params": {"sigma": {"low": 0.3, "high": 2.0, "log": True}},
        },
        {"step": "segment.multi-otsu", "name": "otsu", "params": {"classes": {"choices": [3, 4]}}},
        {"step": "post.remove-small", "params": {"min_size": {"low": 0, "high": 16}}},
    ],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[list[str]]:
    folder = tmp_path_factory.mktemp("search-data")
    image, labels = make_implant_phantom((8, 32, 32), seed=2)
    write_volume(folder / "img.tif", image)
    write_volume(folder / "gt.tif", labels)
    return [[str(folder / "img.tif"), str(folder / "gt.tif")]]


def write_pipeline(folder: Path, spec: dict, name: str = "pipe.yml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [{"step": "denoise.blur"}]}, "unknown step 'denoise.blur'"),
        (
            {"steps": [{"step": "segment.multi-otsu", "params": {"klasses": 3}}]},
            "unknown parameter 'klasses'",
        ),
        (
            {
                "steps": [
                    {"step": "segment.multi-otsu", "params": {"smoothing": {"low": 2, "high": 1}}}
                ]
            },
            "min 2 > max 1",
        ),
        (
            {
                "steps": [
                    {
                        "step": "segment.multi-otsu",
                        "params": {"smoothing": {"low": 0, "high": 1, "log": True}},
                    }
                ]
            },
            "needs low > 0",
        ),
        ({"steps": [{"step": "command", "command": "legacy {input} {output}"}]}, "list of strings"),
        ({"steps": [{"step": "denoise.gaussian"}]}, "must produce labels"),
        ({"steps": []}, "non-empty 'steps'"),
    ],
)
def test_bad_pipelines_name_the_problem(tmp_path, change, message):
    path = write_pipeline(tmp_path, change)
    with pytest.raises(InputError, match=message) as info:
        load_pipeline(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_search_space_kinds():
    pipeline = load_pipeline(PIPELINE)
    space = pipeline.space
    assert space["smooth.sigma"].log and space["otsu.classes"].choices == (3, 4)
    assert space["post.remove-small.min_size"].kind == "int"
    assert space["smooth.sigma"].grid(3) == pytest.approx([0.3, np.sqrt(0.6), 2.0])


HOSTILE = ["; touch {canary}", "$(touch {canary})", "`touch {canary}`", "a b\nc", "' \" \\ *"]


def test_command_step_passes_hostile_arguments_verbatim(tmp_path, data):
    canary = tmp_path / "canary"
    log = tmp_path / "argv.jsonl"
    legacy = tmp_path / "legacy.py"
    legacy.write_text(
        "import json, sys\n"
        "from unified_framework.io import read_volume, write_volume\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "image = read_volume(sys.argv[1]).data\n"
        "write_volume(sys.argv[2], (image > image.mean()).astype('uint8'))\n"
    )
    choices = [h.format(canary=canary) for h in HOSTILE]
    pipeline = load_pipeline(
        {
            "steps": [
                {
                    "step": "command",
                    "command": [
                        sys.executable,
                        str(legacy),
                        "{input}",
                        "{output}",
                        "--level",
                        "{level}",
                    ],
                    "params": {"level": {"choices": choices}},
                }
            ]
        }
    )
    image = read_volume(data[0][0]).data
    for value in choices:
        labels = pipeline.run(image, {"command.level": value}, workdir=tmp_path)
        assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1}
    received = [json.loads(line)[-1] for line in log.read_text().splitlines()]
    assert received == choices
    assert not canary.exists()


def test_search_records_failures_and_resumes_without_redoing(tmp_path, data):
    spec = {
        **PIPELINE,
        "steps": [
            *PIPELINE["steps"][:1],
            {
                "step": "segment.multi-otsu",
                "name": "otsu",
                "params": {"classes": {"choices": [3, 4, 99]}},
            },
        ],
    }
    path = write_pipeline(tmp_path, spec)
    study = tmp_path / "study"
    first = run_search(study, path, data, trials=6, executor="inprocess", stop_after=4, seed=1)
    assert first["new"] == 4 and first["done"] == 4
    before = {t["number"]: t for t in load_trials(study)}
    second = run_search(study, trials=6, executor="inprocess")
    assert second["new"] == 2 and second["done"] == 6
    after = load_trials(study)
    assert [t["number"] for t in after] == sorted({t["number"] for t in after})
    for trial in after:
        if trial["number"] in before:
            assert trial == before[trial["number"]]  # finished trials are not run again
    failed = [t for t in after if t["state"] == "failed"]
    assert all("classes" in t["error"] for t in failed)
    assert all(t["params"]["otsu.classes"] == 99 for t in failed)
    best = best_trials(study, 1)[0]
    assert best["score"] > 0.3 and best["resources"]["wall_time_s"] > 0
    assert run_search(study, trials=6, executor="inprocess")["new"] == 0


def test_killed_search_resumes(tmp_path, data):
    path = write_pipeline(tmp_path, PIPELINE)
    study = tmp_path / "study"
    command = [
        sys.executable,
        "-m",
        "unified_framework",
        "search",
        "run",
        str(path),
        "--study",
        str(study),
        "--data",
        *data[0],
        "--trials",
        "40",
        "--executor",
        "inprocess",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(load_trials(study)) < 3:
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = {t["number"]: t for t in load_trials(study)}
    assert 3 <= len(done) < 40
    # Killed while writing, a run leaves optuna's journal lock (a symlink) behind, which
    # optuna would wait out for 30 s; the next run sees by its own run lock (fcntl's, gone
    # with the process) that no run is alive, and removes it at once.
    stale = study / "optuna.journal.lock"
    if not stale.is_symlink():
        stale.symlink_to(study / "optuna.journal")
    started = time.monotonic()
    result = run_search(study, trials=len(done) + 2, executor="inprocess")
    assert result["new"] == 2 and time.monotonic() - started < 25
    assert not stale.is_symlink() and (study / ".run.lock").exists()
    again = {t["number"]: t for t in load_trials(study)}
    assert all(again[n] == t for n, t in done.items())


def test_a_study_in_use_by_a_run_is_refused(tmp_path, data):
    import fcntl

    study = tmp_path / "study"
    run_search(study, write_pipeline(tmp_path, PIPELINE), data, trials=1, executor="inprocess")
    with open(study / ".run.lock", "a") as running:  # what a live run holds
        fcntl.flock(running, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another search run is using this study"):
            run_search(study, trials=2, executor="inprocess")
    assert len(load_trials(study)) == 1  # the refused run changed nothing
    assert run_search(study, trials=2, executor="inprocess")["new"] == 1


def test_local_dask_cluster_two_workers(tmp_path, data):
    path = write_pipeline(tmp_path, PIPELINE)
    result = run_search(
        tmp_path / "study", path, data, trials=4, executor="local", workers=2, sampler="tpe"
    )
    assert result["done"] == 4 and result["failed"] == 0 and result["trials_per_s"] > 0
    # The workers' start (and loading the images on them) is timed apart from the trials.
    assert 0 < result["startup_s"] < result["wall_time_s"]


def test_grid_search_and_landscape(tmp_path, data):
    spec = {
        "steps": [
            {
                "step": "segment.multi-otsu",
                "params": {
                    "classes": {"choices": [2, 3, 4]},
                    "smoothing": {"low": 0.0, "high": 1.0},
                },
            }
        ]
    }
    path = write_pipeline(tmp_path, spec)
    result = run_search(
        tmp_path / "grid", path, data, trials=6, executor="inprocess", sampler="grid", grid_points=2
    )
    assert result["done"] == 6
    seen = {
        (t["params"]["segment.multi-otsu.classes"], t["params"]["segment.multi-otsu.smoothing"])
        for t in load_trials(tmp_path / "grid")
    }
    assert seen == {(c, s) for c in (2, 3, 4) for s in (0.0, 1.0)}  # the whole grid, once each
    frame, how = landscape(load_trials(tmp_path / "grid"))
    assert (
        how == "parameters" and len(frame) == 6 and {"x", "y", "z", "score"} <= set(frame.columns)
    )
    assert (frame["z"] == 0).all()  # two parameters: the third axis is unused


def test_bad_data(tmp_path, data):
    path = write_pipeline(tmp_path, PIPELINE)
    with pytest.raises(InputError, match="no ground truth"):
        run_search(tmp_path / "s", path, [[data[0][0]]], trials=1, executor="inprocess")
    with pytest.raises(InputError, match="no such file"):
        run_search(
            tmp_path / "s",
            path,
            [[data[0][0], str(tmp_path / "missing.tif")]],
            trials=1,
            executor="inprocess",
        )
    assert not (tmp_path / "s").exists()


def test_cli(tmp_path, data, capsys):
    path = write_pipeline(tmp_path, PIPELINE)
    study = str(tmp_path / "study")
    assert (
        main(
            [
                "search",
                "run",
                str(path),
                "--study",
                study,
                "--data",
                *data[0],
                "--trials",
                "3",
                "--executor",
                "inprocess",
            ]
        )
        == 0
    )
    assert "best: trial" in capsys.readouterr().out
    assert main(["search", "status", study, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 3
    assert main(["search", "best", study, "--top", "2"]) == 0
    assert main(["search", "report", study, "--out", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().startswith("number,state,score")
    assert main(["search", "export", study, "--out", str(tmp_path / "best.yml")]) == 0
    assert not load_pipeline(tmp_path / "best.yml").space
    assert (
        main(
            [
                "search",
                "apply",
                str(tmp_path / "best.yml"),
                data[0][0],
                "--out",
                str(tmp_path / "l.tif"),
            ]
        )
        == 0
    )
    assert read_volume(tmp_path / "l.tif").shape == (8, 32, 32)
    assert (
        main(
            [
                "search",
                "apply",
                str(tmp_path / "best.yml"),
                data[0][0],
                "--out",
                str(tmp_path / "l2.tif"),
                "--set",
                "otsu.classes=2",
            ]
        )
        == 0
    )
    assert int(read_volume(tmp_path / "l2.tif").data.max()) == 1
    assert (
        main(
            [
                "search",
                "apply",
                str(tmp_path / "best.yml"),
                data[0][0],
                "--out",
                str(tmp_path / "l3.tif"),
                "--set",
                "nostep.x=2",
            ]
        )
        == 2
    )
    assert main(["search", "apply", str(path), data[0][0], "--out", str(tmp_path / "x.tif")]) == 2
    assert "still search spaces" in capsys.readouterr().err
    assert main(["search", "run", "--study", study, "--executor", "bogus"]) == 2


@pytest.mark.slow
def test_umap_landscape():
    rng = np.random.default_rng(0)
    trials = [
        {
            "number": i,
            "state": "complete",
            "score": float(rng.random()),
            "params": {
                "a": float(rng.random()),
                "b": int(rng.integers(5)),
                "c": str(rng.integers(3)),
                "d": float(rng.random()),
            },
        }
        for i in range(12)
    ]
    frame, how = landscape(trials)
    coords = frame[["x", "y", "z"]].to_numpy()
    assert how == "umap" and np.isfinite(coords).all()
    assert coords.std(axis=0).min() > 0  # a 3D embedding: no axis left flat


def test_umap_landscape_does_not_load_tensorflow():
    # umap imports TensorFlow when it can, and TensorFlow before triton crashes the process:
    # the landscape must not load it. Checked in a fresh interpreter, since other tests of
    # this session load TensorFlow on purpose.
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from unified_framework.search.landscape import landscape\n"
        "rng = np.random.default_rng(0)\n"
        "trials = [{'number': i, 'state': 'complete', 'score': float(rng.random()), 'params': "
        "{'a': float(rng.random()), 'b': int(rng.integers(5)), 'c': str(rng.integers(3)), "
        "'d': float(rng.random())}} "
        "for i in range(12)]\n"
        "print(landscape(trials)[1], 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "umap False"


def test_dask_slurm_cluster_checks_resources():
    import shutil

    from unified_framework.errors import BackendUnavailable
    from unified_framework.hpc import dask_slurm_cluster

    expected = InputError if shutil.which("sbatch") else BackendUnavailable
    with pytest.raises(expected):
        dask_slurm_cluster(workers=1, memory="lots")
