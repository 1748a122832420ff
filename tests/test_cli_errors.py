"""Hostile and damaged input through every command: one ``mdlma: error:`` line, exit 2, nothing left behind.

Damaged chunks and headers are made from real files the framework wrote; file names
with control characters are real files. (Permission errors: test_cli_permissions.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from unified_framework.catalogue.thumbnail import thumbnail_slice
from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.io import write_volume

SHAPE = (16, 32, 24)


def volume(dtype="uint16"):
    return np.random.default_rng(3).integers(0, 200, SHAPE).astype(dtype)


def run(argv: list[str], capsys) -> str:
    """Run ``mdlma argv`` expecting exit 2 with one error line; return that line."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("mdlma: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def inputs(tmp_path) -> Path:
    """A folder with a label volume and a Zarr store and an HDF5 file each with one damaged chunk."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(folder / "labels.tif", (volume() > 100).astype("uint8"))
    store = write_volume(folder / "scan.zarr", volume(), chunks=8)
    chunk = store / "1.1.1"
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated
    h5 = write_volume(folder / "scan.h5", volume(), chunks=8)
    with h5py.File(h5, "r") as f:
        info = f["/entry/data/data"].id.get_chunk_info(5)
    with open(h5, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    return folder


COMMANDS = [
    ["io", "info", "{input}"],
    ["io", "convert", "{input}", "{out}/converted.zarr"],
    ["io", "convert", "{input}", "{out}/converted.tif"],
    ["score", "{input}", "{labels}", "--json", "{out}/scores.json"],
    ["segment", "classical", "{input}", "-o", "{out}/seg.tif", "--report", "{out}/report.json"],
]


@pytest.mark.parametrize(
    "name, chunk",
    [
        ("scan.zarr", "chunk 1.1.1 (z 8:16, y 8:16, x 8:16)"),
        ("scan.h5", "chunk 0.1.2 (z 0:8, y 8:16, x 16:24)"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_corrupt_chunk_gives_one_line_and_leaves_nothing(
    inputs, tmp_path, capsys, name, chunk, command
):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(input=inputs / name, labels=inputs / "labels.tif", out=out) for a in command]
    err = run(argv, capsys)
    assert f"{inputs / name}: {chunk} is corrupt or truncated" in err
    assert os.listdir(out) == []


def test_hostile_zarray_shape_fails_fast_everywhere(inputs, tmp_path, capsys):
    store = write_volume(tmp_path / "claims.zarr", volume(), chunks=8)
    meta = json.loads((store / ".zarray").read_text())
    meta["shape"] = [100000] * 3
    (store / ".zarray").write_text(json.dumps(meta))
    out = tmp_path / "out"
    out.mkdir()
    start = time.monotonic()
    for command in COMMANDS:
        argv = [a.format(input=store, labels=inputs / "labels.tif", out=out) for a in command]
        assert "100000x100000x100000" in run(argv, capsys)
    with pytest.raises(InputError, match="100000x100000x100000"):
        thumbnail_slice(str(store))
    assert time.monotonic() - start < 30  # each used to run on, or take 43 s for the thumbnail
    assert os.listdir(out) == []


def mdlma(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real ``mdlma`` process: its logging goes to stderr as a user sees it."""
    return subprocess.run(
        [sys.executable, "-m", "unified_framework", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_tifffile_log_lines_do_not_precede_the_error(tmp_path):
    path = write_volume(tmp_path / "vol.tif", volume())
    path.write_bytes(path.read_bytes()[:9000])
    run_ = mdlma("io", "info", path)
    assert run_.returncode == 2
    assert (
        run_.stderr.startswith(f"mdlma: error: {path}: corrupt or truncated TIFF")
        and run_.stderr.count("\n") == 1
    ), run_.stderr


NASTY = "scan\ncreated\tlocal/forged\t\x1b[2Jx.tif"


def test_file_names_cannot_forge_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MDLMA_CATALOGUE", str(tmp_path / "catalogue.sqlite"))
    config = tmp_path / "config.toml"
    config.write_text('[scicat]\nowner_group = "p05"\ncontact_email = "alice@example.org"\n')
    monkeypatch.setenv("MDLMA_CONFIG", str(config))
    good = write_volume(tmp_path / NASTY, volume())
    assert main(["catalogue", "ingest", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.count("\t") == 2 and "\x1b" not in out
    assert out.rstrip("\n").endswith("scan\\ncreated\\tlocal/forged\\t\\x1b[2Jx.tif")
    assert main(["catalogue", "search"]) == 0
    assert capsys.readouterr().out.count("\n") == 2  # header and one row

    bad = tmp_path / ("bad\nmdlma: error: forged.tif")
    bad.write_bytes(b"II*\x00" + b"\xff" * 100)
    assert "bad\\nmdlma: error: forged.tif" in run(["io", "info", bad], capsys)


def test_log_lines_built_from_names_are_escaped(tmp_path):
    labels = (volume() > 100).astype("uint8")
    pred = write_volume(tmp_path / "pred\nWARNING forged.tif", labels, spacing=(2.0, 1.0, 1.0))
    gt = write_volume(tmp_path / "gt.tif", labels)
    run_ = mdlma("score", pred, gt, "--no-surface")
    assert run_.returncode == 0, run_.stderr
    [warning] = run_.stderr.splitlines()
    assert warning.startswith("WARNING ") and "pred\\nWARNING forged.tif" in warning


@pytest.mark.parametrize(
    "env, config, expected",
    [
        (
            {"MDLMA_DASHBOARD_PORT": "eighty"},
            "",
            "MDLMA_DASHBOARD_PORT: expected an integer, got 'eighty'",
        ),
        (
            {},
            '[dashboard]\nport = "eighty"\n',
            "[dashboard] port: expected an integer 1..65535, got 'eighty'",
        ),
    ],
)
def test_bad_dashboard_port_is_one_line(tmp_path, monkeypatch, capsys, env, config, expected):
    (tmp_path / "config.toml").write_text(config)
    monkeypatch.setenv("MDLMA_CONFIG", str(tmp_path / "config.toml"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert expected in run(["dashboard", "--print-command"], capsys)
