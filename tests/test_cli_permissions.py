"""Files and folders a user may not read or write give one-line errors, run as an unprivileged user.

Root reads and writes any file whatever its mode, so these commands run as the test
cluster's unprivileged account (``runuser``); every command is run in one interpreter
by a small driver that reports exit status, stderr and any escaped traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest_slurm import slurm_cluster, slurm_test_user, test_user_python  # noqa: F401 - fixtures

from unified_framework.io import write_volume

DRIVER = """
import contextlib, io, json, sys, traceback
from unified_framework.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException:
            rc, err = None, io.StringIO(err.getvalue() + traceback.format_exc())
    results.append({"rc": rc, "stderr": err.getvalue()})
print(json.dumps(results))
"""


@pytest.fixture
def place(test_user_python):  # noqa: F811
    """A folder the test user may enter, with root-owned inputs of every kind of access.

    ``open.tif``/``labels.tif`` readable, ``secret.tif`` root-only (0600), ``locked/`` a
    root-only folder of slices, ``chunky.zarr`` a store with one root-only chunk, ``readonly/`` a folder the user may not write to and
    ``mine/`` one they may.
    """
    folder = Path(tempfile.mkdtemp(prefix="mdlma-permissions-"))
    folder.chmod(0o755)
    data = np.random.default_rng(0).integers(0, 200, (6, 16, 12)).astype("uint16")
    for name, values in (
        ("open.tif", data),
        ("labels.tif", (data > 100).astype("uint8")),
        ("secret.tif", data),
    ):
        write_volume(folder / name, values).chmod(0o644)
    (folder / "secret.tif").chmod(0o600)
    write_volume(folder / "locked", data)
    (folder / "locked").chmod(0o700)
    write_volume(folder / "chunky.zarr", data, chunks=4)
    for entry in (folder / "chunky.zarr").iterdir():
        entry.chmod(0o644)
    (folder / "chunky.zarr" / "1.1.1").chmod(0o600)
    (folder / "readonly").mkdir(mode=0o755)
    (folder / "mine").mkdir()
    (folder / "mine").chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def run_as_user(command: list[str], folder: Path, *argvs: list[str]) -> list[dict]:
    """Run ``mdlma`` with each argument list as the test user; their exit codes and stderr."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(folder / "mine"),
        "MDLMA_CONFIG": str(folder / "mine" / "config.toml"),
        "MDLMA_HOME": str(folder / "mine"),
        "MDLMA_CATALOGUE": str(folder / "mine" / "catalogue.sqlite"),
    }
    run = subprocess.run(
        [*command, "-c", DRIVER, json.dumps([list(a) for a in argvs])],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_unreadable_inputs_and_unwritable_outputs_give_one_line_errors(test_user_python, place):  # noqa: F811
    p = place
    cases = [
        (
            ["io", "info", str(p / "secret.tif")],
            [p / "secret.tif", "cannot read", "permission denied"],
        ),
        (["io", "info", str(p / "locked")], [p / "locked", "permission denied"]),
        (
            ["io", "info", str(p / "locked" / "slice_00000.tif")],
            ["locked/slice_00000.tif", "permission denied"],
        ),
        (
            ["io", "convert", str(p / "secret.tif"), str(p / "mine" / "out.zarr")],
            [p / "secret.tif", "permission denied"],
        ),
        (
            ["io", "convert", str(p / "chunky.zarr"), str(p / "mine" / "out.zarr")],
            [f"{p / 'chunky.zarr'}: cannot read {p / 'chunky.zarr' / '1.1.1'} (permission denied)"],
        ),
        (
            ["io", "convert", str(p / "open.tif"), str(p / "readonly" / "out.zarr")],
            [p / "readonly" / "out.zarr", "cannot write", "permission denied"],
        ),
        (
            ["io", "convert", str(p / "open.tif"), str(p / "readonly" / "new" / "out.h5")],
            [p / "readonly" / "new" / "out.h5", "cannot write", "permission denied"],
        ),
        (
            ["io", "convert", str(p / "open.tif"), str(p / "readonly")],
            [p / "readonly", "cannot write"],
        ),
        (
            ["score", str(p / "secret.tif"), str(p / "labels.tif")],
            [p / "secret.tif", "permission denied"],
        ),
        (
            [
                "score",
                str(p / "labels.tif"),
                str(p / "labels.tif"),
                "--no-surface",
                "--json",
                str(p / "readonly" / "s.json"),
            ],
            [p / "readonly" / "s.json", "cannot write"],
        ),
        (
            [
                "score",
                str(p / "labels.tif"),
                str(p / "labels.tif"),
                "--no-surface",
                "--csv",
                str(p / "readonly" / "s.csv"),
            ],
            [p / "readonly" / "s.csv", "cannot write"],
        ),
        (
            ["segment", "classical", str(p / "secret.tif"), "-o", str(p / "mine" / "seg.tif")],
            [p / "secret.tif", "permission denied"],
        ),
        (
            ["segment", "classical", str(p / "open.tif"), "-o", str(p / "readonly" / "seg.tif")],
            [p / "readonly" / "seg.tif", "cannot write"],
        ),
        (
            [
                "segment",
                "classical",
                str(p / "open.tif"),
                "-o",
                str(p / "mine" / "seg.tif"),
                "--report",
                str(p / "readonly" / "r.json"),
            ],
            [p / "readonly" / "r.json", "cannot write"],
        ),
        (["catalogue", "ingest", str(p / "secret.tif")], [p / "secret.tif", "permission denied"]),
        (["catalogue", "ingest", str(p / "locked")], [p / "locked", "permission denied"]),
    ]
    results = run_as_user(test_user_python, p, *(argv for argv, _ in cases))
    failures = []
    for (argv, parts), result in zip(cases, results):
        message = result["stderr"]
        if not (
            result["rc"] == 2
            and message.startswith("mdlma: error: ")
            and message.count("\n") == 1
            and all(str(part) in message for part in parts)
        ):
            failures.append((argv[:2], message[-600:]))
    assert not failures, "\n".join(map(str, failures))
    # Nothing half-written: no output and no temporary, where the user could write.
    assert sorted(os.listdir(p / "mine")) == [
        "catalogue.sqlite",
        "seg.tif",
    ]  # seg.tif: its report failed afterwards
    assert os.listdir(p / "readonly") == []
