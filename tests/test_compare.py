"""mdlma compare: several methods on the same held-out data, one table (JSON/CSV/PNG)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.data.phantom import make_implant_phantom
from unified_framework.io import Volume, write_volume


@pytest.fixture
def data(tmp_path):
    paths = []
    for seed in (0, 7):
        image, labels = make_implant_phantom((24, 24, 24), seed=seed)
        write_volume(tmp_path / f"i{seed}.tif", Volume(image, (5.0, 5.0, 5.0)))
        write_volume(tmp_path / f"l{seed}.tif", Volume(labels.astype(np.uint8), (5.0, 5.0, 5.0)))
        paths.append((str(tmp_path / f"i{seed}.tif"), str(tmp_path / f"l{seed}.tif")))
    return paths


@pytest.mark.slow
def test_compare_classical_and_sun(tmp_path, data):
    out = tmp_path / "cmp"
    args = ["compare", "--train", *data[0], "--test", *data[1], "--out", str(out)]
    args += [
        "--methods",
        "classical",
        "sun-9",
        "sun-3",
        "--sun-steps",
        "6",
        "--sun-input-size",
        "16",
    ]
    assert main(args) == 0
    payload = json.loads((out / "comparison.json").read_text())
    methods = {m["method"]: m for m in payload["methods"]}
    assert set(methods) == {"classical", "sun-9", "sun-3"}
    assert methods["sun-9"]["model"] == methods["sun-3"]["model"]  # one model, two axis sets
    rows = [r for r in payload["rows"] if r["method"] == "classical"]
    assert {r["label"] for r in rows} == {1, 2, 3}
    assert all(0 <= r["dice"] <= 1 for r in payload["rows"])
    bone = next(r for r in rows if r["label"] == 1)
    assert bone["dice"] > 0.5 and bone["volume_ratio"] > 0
    assert (out / "comparison.csv").read_text().startswith("method,case,label,dice,hd95,assd")
    assert (out / "comparison.png").stat().st_size > 1000
    assert (out / "predictions" / "sun-9" / "case_000.tif").is_file()


def test_compare_errors(tmp_path, data):
    assert (
        main(
            [
                "compare",
                "--train",
                *data[0],
                "--test",
                *data[1],
                "--methods",
                "bogus",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert main(["compare", "--merge-only", "--out", str(tmp_path / "empty")]) == 2
    assert (
        main(
            [
                "compare",
                "--train",
                "missing.tif",
                data[0][1],
                "--test",
                *data[1],
                "--methods",
                "classical",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )


def test_compare_array_task_arguments(tmp_path, data, capsys):
    common = ["compare", "--test", *data[1], "--methods", "classical", "--out", str(tmp_path / "c")]
    assert main([*common, "--train", data[0][0]]) == 2  # an image without its labels
    assert "--train: expected IMAGE LABELS pairs" in capsys.readouterr().err
    assert main([*common, "--train", *data[0], "--method-index", "1"]) == 2
    assert "--method-index 1: expected 0 .. 0" in capsys.readouterr().err
    # one array task: runs only its method and leaves the merge to the merge job
    assert main([*common, "--train", *data[0], "--method-index", "0"]) == 0
    assert (tmp_path / "c" / "methods" / "classical.json").is_file()
    assert not (tmp_path / "c" / "comparison.json").exists()
    assert main(["compare", "--merge-only", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "comparison.json").is_file()


def test_compare_cases_are_shared_and_kept(tmp_path, data):
    """Each held-out case has its own lock and record: a case another process holds is
    waited for and read, not predicted twice; a rerun keeps finished cases; a record of
    another model is not reused."""
    import fcntl
    import threading

    from unified_framework.compare import run_method

    out = tmp_path / "cmp"
    test = [data[1], data[0]]
    first = run_method("classical", [data[0]], test, out)
    cases = out / "predictions" / "classical"
    assert [p.name for p in sorted(cases.glob("case_*.json"))] == ["case_000.json", "case_001.json"]
    record = json.loads((cases / "case_001.json").read_text())
    record["rows"][0]["dice"] = 0.123  # a marker: a kept record is read, not recomputed
    (cases / "case_001.json").write_text(json.dumps(record))
    # Another process holds case 0 and finishes it while this one runs.
    handle = open(cases / "case_000.lock", "a")  # noqa: SIM115 - closed by the thread
    fcntl.flock(handle, fcntl.LOCK_EX)
    marked = json.loads((cases / "case_000.json").read_text())
    marked["rows"][0]["dice"] = 0.456

    def other() -> None:
        (cases / "case_000.json").write_text(json.dumps(marked))
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    timer = threading.Timer(0.5, other)
    timer.start()
    second = run_method("classical", [data[0]], test, out)
    timer.join()
    dice = {(r["case"], r["label"]): r["dice"] for r in second["rows"]}
    assert dice[(data[1][0], 1)] == 0.456 and dice[(data[0][0], 1)] == 0.123
    assert len(second["predict_case_seconds"]) == 2
    assert second["predict_seconds"] == pytest.approx(sum(second["predict_case_seconds"]))
    # A new model (another modification time) predicts again.
    model = out / "work" / "models" / "classical.json"
    import os

    os.utime(model, (model.stat().st_atime, model.stat().st_mtime + 10))
    third = run_method("classical", [data[0]], test, out)
    assert [r["dice"] for r in third["rows"]] == [r["dice"] for r in first["rows"]]
