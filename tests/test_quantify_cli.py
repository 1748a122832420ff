"""``mdlma quantify`` and ``mdlma sample implant --analytic``: files in, JSON/CSV out, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.io import read_volume, write_volume


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analytic")
    args = ["sample", "implant", str(folder / "s.tif"), "--gt", str(folder / "l.tif")]
    assert (
        main([*args, "--analytic", "--shape", "8", "112", "112", "--truth", str(folder / "t.json")])
        == 0
    )
    return folder


def test_quantify_writes_json_csv_and_maps(analytic, capsys):
    out = analytic / "r.json"
    code = main(
        [
            "quantify",
            str(analytic / "l.tif"),
            "--out",
            str(out),
            "--shells",
            "3",
            "--shell-width",
            "30",
            "--days",
            "30",
            "--cylinder",
            "--initial-radius",
            "84",
            "--maps",
            str(analytic / "maps"),
        ]
    )
    assert code == 0
    truth = json.loads((analytic / "t.json").read_text())
    doc = json.loads(out.read_text())
    values = doc["samples"][0]["values"]
    assert values["residual_volume_mm3"] == pytest.approx(truth["residual_volume_mm3"], rel=0.02)
    assert values["degradation_depth_um"] == pytest.approx(truth["degradation_depth_um"], rel=0.05)
    header, row = out.with_suffix(".csv").read_text().splitlines()
    assert "bv_tv_0_30um" in header and row.startswith("l,")
    thickness = read_volume(doc["samples"][0]["maps"]["thickness"])
    assert thickness.spacing == (5.0, 5.0, 5.0) and float(thickness.data.max()) > 0
    assert "BIC" in capsys.readouterr().out


def test_uncertainty_from_probabilities(analytic, tmp_path):
    labels = read_volume(analytic / "l.tif").data
    prob = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    prob[:, :, 50:60, 50:60] = 0.25  # doubt inside the implant
    np.save(tmp_path / "p.npy", prob)
    out = tmp_path / "u.json"
    assert (
        main(
            [
                "quantify",
                str(analytic / "l.tif"),
                "--out",
                str(out),
                "--shells",
                "0",
                "--uncertainty",
                str(tmp_path / "p.npy"),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    low, high = doc["samples"][0]["uncertainty"]["ranges"]["residual_volume_mm3"]
    assert low < high
    assert "residual_volume_mm3_low" in out.with_suffix(".csv").read_text().splitlines()[0]
    # SUN's layout: a Zarr array (classes, z, y, x) of float16, read slab by slab
    import zarr

    store = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=prob.shape, chunks=(4, 4, 64, 64), dtype="f2"
    )
    store[:] = prob.astype(np.float16)
    assert (
        main(
            [
                "quantify",
                str(analytic / "l.tif"),
                "--out",
                str(out),
                "--shells",
                "0",
                "--uncertainty",
                str(tmp_path / "p.zarr"),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["samples"][0]["uncertainty"]["ranges"][
        "residual_volume_mm3"
    ] == [low, high]


def test_time_series_and_change_map(tmp_path):
    base = tmp_path / "ts.tif"
    assert (
        main(
            [
                "sample",
                "implant",
                str(base),
                "--gt",
                str(tmp_path / "lab.tif"),
                "--analytic",
                "--shape",
                "8",
                "96",
                "96",
                "--days",
                "0",
                "30",
                "--motion",
                "0",
                "--layer",
                "20",
                "--shell-width",
                "20",
                "--truth",
                str(tmp_path / "t.json"),
            ]
        )
        == 0
    )
    out = tmp_path / "series.json"
    code = main(
        [
            "quantify",
            str(tmp_path / "lab_day000.tif"),
            str(tmp_path / "lab_day030.tif"),
            "--time-series",
            "--days",
            "0",
            "30",
            "--registration",
            "none",
            "--out",
            str(out),
            "--cylinder",
            "--initial-radius",
            "72",
            "--shells",
            "0",
            "--change-map",
            str(tmp_path / "change.tif"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["rates_per_day"]["degradation_depth_um"] == pytest.approx(1.0, rel=0.1)
    change = read_volume(tmp_path / "change.tif").data
    assert (change == 4 * 2 + 3).any()  # residual -> layer


def test_compare_against_analytic_truth(analytic, tmp_path, capsys):
    labels = read_volume(analytic / "l.tif").data
    thin = labels.copy()
    thin[labels == 3] = 0
    write_volume(tmp_path / "thin.tif", thin, spacing=(5.0, 5.0, 5.0))
    out = tmp_path / "c.json"
    code = main(
        [
            "quantify",
            "compare",
            str(analytic / "l.tif"),
            str(tmp_path / "thin.tif"),
            "--names",
            "good",
            "bad",
            "--truth",
            str(analytic / "t.json"),
            "--out",
            str(out),
            "--shells",
            "0",
        ]
    )
    assert code == 0
    table = json.loads(out.read_text())["compare"]
    assert table["relative_error"]["layer_volume_mm3"]["bad"] == -1.0
    assert "good" in capsys.readouterr().out


def test_bad_input_one_line(analytic, tmp_path, capsys):
    empty = np.zeros((8, 16, 16), np.uint8)
    write_volume(tmp_path / "none.tif", empty)
    assert main(["quantify", str(tmp_path / "none.tif"), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdlma: error:") and "no implant" in err and "\n" not in err
    assert not (tmp_path / "x.json").exists()
    assert (
        main(
            [
                "quantify",
                str(analytic / "l.tif"),
                "--out",
                str(tmp_path / "x.json"),
                "--classes",
                "screw=2",
            ]
        )
        == 2
    )
    assert "unknown role" in capsys.readouterr().err
    assert main(["sample", "implant", str(tmp_path / "a.tif"), "--days", "1"]) == 2
    assert "--analytic" in capsys.readouterr().err


def test_sampled_uncertainty_and_screw_fit_from_the_cli(tmp_path, capsys):
    # the analytic screw: --screw recovers its pitch; sampled ranges land in JSON and CSV
    labels_path, truth_path = tmp_path / "l.tif", tmp_path / "t.json"
    args = ["sample", "implant", str(tmp_path / "s.tif"), "--gt", str(labels_path)]
    shape = ["--shape", "40", "80", "80", "--truth", str(truth_path)]
    assert main([*args, "--analytic", "--thread", "--depth", "0", *shape]) == 0
    truth = json.loads(truth_path.read_text())
    labels = read_volume(labels_path).data
    prob = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    prob[2:, :, 30:50, 30:50] = 0.5  # doubt between residual and layer in the core
    np.save(tmp_path / "p.npy", prob)
    out = tmp_path / "r.json"
    common = ["quantify", str(labels_path), "--out", str(out), "--shells", "0"]
    assert (
        main(
            [
                *common,
                "--screw",
                "--uncertainty",
                "sample",
                str(tmp_path / "p.npy"),
                "--samples",
                "3",
            ]
        )
        == 0
    )
    sample = json.loads(out.read_text())["samples"][0]
    assert sample["settings"]["screw"]["pitch_um"] == pytest.approx(
        truth["screw"]["pitch_um"], rel=0.01
    )
    sampling = sample["uncertainty"]["sampling"]
    assert sampling["samples"] == 3 and sampling["smooth_voxels"] == 1.5
    low, high = sampling["low"]["residual_volume_mm3"], sampling["high"]["residual_volume_mm3"]
    assert low < high
    assert sample["uncertainty"]["ranges"]["residual_volume_mm3"][0] <= low
    header = out.with_suffix(".csv").read_text().splitlines()[0]
    assert "residual_volume_mm3_sampled_low" in header and "residual_volume_mm3_low" in header
    for bad, message in (
        (["--uncertainty", "sample"], "give the probability file"),
        (["--samples", "5"], "--uncertainty sample PROB"),
        (["--uncertainty", str(tmp_path / "p.npy"), "--samples", "1"], "at least 2"),
    ):
        assert main([*common, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
