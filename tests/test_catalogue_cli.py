"""``mdlma catalogue ingest|search|show`` on the embedded catalogue and on SciCat.

The SciCat runs use ``tests/scicat_standin.py``, an in-memory server following the SciCat
API (SciCat itself needs MongoDB, which cannot run here).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scicat_standin import SciCatStandIn

from unified_framework.cli.main import main
from unified_framework.io import write_volume


@pytest.fixture
def local(tmp_path, monkeypatch):
    """An empty embedded catalogue selected through MDLMA_CATALOGUE, no SciCat configured."""
    for name in ("URL", "TOKEN", "USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"MDLMA_SCICAT_{name}", raising=False)
    monkeypatch.setenv("MDLMA_CATALOGUE", str(tmp_path / "catalogue.sqlite"))
    config = tmp_path / "config.toml"
    config.write_text('[scicat]\nowner_group = "p05"\ncontact_email = "alice@example.org"\n')
    monkeypatch.setenv("MDLMA_CONFIG", str(config))
    return tmp_path / "catalogue.sqlite"


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    fine = write_volume(
        tmp_path / "fine.tif", rng.random((4, 8, 8), dtype=np.float32), spacing=(0.65,) * 3
    )
    coarse = write_volume(
        tmp_path / "coarse.h5", rng.random((4, 8, 8), dtype=np.float32), spacing=(5.0,) * 3
    )
    labels = write_volume(
        tmp_path / "fine_labels.tif",
        (rng.random((4, 8, 8)) > 0.5).astype(np.uint8),
        spacing=(0.65,) * 3,
    )
    return str(fine), str(coarse), str(labels)


def _json(capsys) -> object:
    return json.loads(capsys.readouterr().out)


def test_ingest_search_show_on_the_embedded_catalogue(local, volumes, capsys):
    fine, coarse, labels = volumes
    assert main(["catalogue", "ingest", fine, coarse, "--keyword", "implant"]) == 0
    out = capsys.readouterr().out
    assert out.count("created\tlocal/") == 2 and fine in out and local.exists()

    assert main(["catalogue", "ingest", fine]) == 0
    assert capsys.readouterr().out.startswith("exists\tlocal/")

    assert (
        main(
            [
                "catalogue",
                "ingest",
                labels,
                "--derived-from",
                fine,
                "--software",
                "sun 0.1",
                "--json",
            ]
        )
        == 0
    )
    [derived] = _json(capsys)
    assert derived["action"] == "create"

    assert main(["catalogue", "search", "--where", "voxel_size<1 um", "--json"]) == 0
    page = _json(capsys)
    assert page["total"] == 2
    assert {d["datasetName"] for d in page["datasets"]} == {"fine.tif", "fine_labels.tif"}
    assert all(d["ownerGroup"] == "p05" for d in page["datasets"])

    assert main(["catalogue", "search", "--type", "derived", "--json"]) == 0
    [labels_doc] = _json(capsys)["datasets"]
    fine_pid = labels_doc["inputDatasets"][0]

    assert (
        main(
            [
                "catalogue",
                "search",
                "--keyword",
                "implant",
                "--limit",
                "1",
                "--sort",
                "datasetName",
                "--ascending",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "coarse.h5" in captured.out and "fine.tif" not in captured.out
    assert "1-1 of 2 datasets (next: --page 2)" in captured.err

    assert main(["catalogue", "show", fine_pid]) == 0
    out = capsys.readouterr().out
    assert "datasetName: fine.tif" in out and "voxel_size: 0.65 um" in out
    assert "files (1):" in out and "fine.tif\t" in out


def test_dry_run_changes_nothing(local, volumes, capsys):
    fine, _, _ = volumes
    assert main(["catalogue", "ingest", "--dry-run", "--json", fine]) == 0
    [result] = _json(capsys)
    assert result["dry_run"] and result["pid"] is None
    assert result["record"]["dataset"]["scientificMetadata"]["format"]["value"] == "tiff"
    assert main(["catalogue", "search", "--json"]) == 0
    assert _json(capsys)["total"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["catalogue", "search", "--where", "voxel_size>1 parsec"], "unit 'parsec'"),
        (["catalogue", "search", "--from", "yesterday"], "date 'yesterday'"),
        (["catalogue", "search", "--page", "0"], "--page 0: expected a page number from 1 to"),
        (["catalogue", "search", "--page", "-3"], "--page -3: expected a page number from 1 to"),
        # Once a traceback: SQLite's OFFSET overflowed ("Python int too large to convert").
        (
            ["catalogue", "search", "--page", "99999999999999999999"],
            "--page 99999999999999999999: expected",
        ),
        (["catalogue", "search", "--limit", "0"], "--limit 0: expected"),
        (["catalogue", "search", "--limit", "5000"], "--limit 5000: expected"),
        (["catalogue", "search", "x" * 600], "search text: 600 characters; expected at most 500"),
        (["catalogue", "show", "local/missing"], "not in the catalogue"),
        (["catalogue", "ingest", "--job-parameters", "{bad", "x"], "--job-parameters"),
    ],
)
def test_bad_input_exits_2_with_one_line(local, argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdlma: error: ") and message in err and err.count("\n") == 1


def test_the_last_page_the_backends_hold_is_an_empty_page(local, volumes, capsys):
    fine, _, _ = volumes
    assert main(["catalogue", "ingest", fine]) == 0
    capsys.readouterr()
    last = str((2**31 - 1) // 25 + 1)
    assert main(["catalogue", "search", "--page", last]) == 0
    assert f"page {last} is past the last of 1 datasets" in capsys.readouterr().err


def test_ingest_of_a_corrupt_file_exits_2(local, tmp_path, capsys):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["catalogue", "ingest", str(broken)]) == 2
    assert "broken.h5: cannot read HDF5 file" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".tif", ".nii", ".h5"])
def test_a_truncated_file_is_not_ingested(local, tmp_path, capsys, suffix):
    complete = write_volume(
        tmp_path / f"scan{suffix}", np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    )
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(complete.read_bytes()[: complete.stat().st_size // 2])
    assert main(["catalogue", "ingest", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mdlma: error: {truncated}: ") and err.count("\n") == 1
    assert main(["catalogue", "search", "--json"]) == 0
    assert _json(capsys)["total"] == 0


def test_ingest_through_a_symlinked_folder_finds_the_dataset(
    local, volumes, tmp_path, capsys, monkeypatch
):
    fine, _, _ = volumes
    assert main(["catalogue", "ingest", fine]) == 0
    created = capsys.readouterr().out
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "link")
    assert main(["catalogue", "ingest", "fine.tif", str(tmp_path / "link" / "fine.tif")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [created.replace("created", "exists").strip()] * 2


@pytest.mark.parametrize("version", [3, 4])
def test_cli_against_scicat_keeps_the_token_secret(volumes, monkeypatch, capsys, caplog, version):
    server = SciCatStandIn().start()
    try:
        token = server.issue_token()
        monkeypatch.setenv("MDLMA_SCICAT_URL", server.url(version))
        monkeypatch.setenv("MDLMA_SCICAT_TOKEN", token)
        caplog.set_level(logging.DEBUG)
        fine, coarse, _ = volumes
        assert main(["-vv", "catalogue", "ingest", fine, coarse]) == 0
        assert capsys.readouterr().out.count("created\t20.500.12269/") == 2
        assert main(["-vv", "catalogue", "search", "--where", "voxel_size>1 um", "--json"]) == 0
        page = _json(capsys)
        assert page["total"] == 1 and page["datasets"][0]["datasetName"] == "coarse.h5"
        assert len(server.datasets) == 2
        captured = capsys.readouterr()
        assert token not in caplog.text + captured.out + captured.err
        assert any(
            r.levelno == logging.DEBUG and "SciCat" in r.getMessage() for r in caplog.records
        )
    finally:
        server.stop()
