"""The dashboard's Analysis page, driven with Streamlit's AppTest (no SLURM job needed)."""

from __future__ import annotations

import json

import pytest
from apptest_pages import assert_clean, open_page  # the `home` fixture comes with it (conftest)


def test_analyses_a_phantom_series_and_shows_table_plots_and_map(home):
    app = open_page("analysis")
    assert_clean(app)
    assert any("No analysis report" in str(i.value) for i in app.info)
    app.button(key="analysis_create").click().run()
    assert_clean(app)
    (frame,) = [f.value for f in app.dataframe if "residual_volume_mm3" in f.value.columns]
    assert list(frame["sample"]) == ["day000", "day020", "day040"]
    assert frame["residual_volume_mm3"].is_monotonic_decreasing
    keys = {chart.proto.id for chart in app.get("plotly_chart")}
    assert len(keys) == 4  # histogram, BV/TV curve, trend across time points, thickness map
    app.selectbox(key="analysis_quantity").set_value("layer_thickness_mean_um").run()
    assert_clean(app)
    app.selectbox(key="analysis_map_sample").set_value(
        app.selectbox(key="analysis_map_sample").options[1]
    ).run()
    assert_clean(app)
    report = json.loads(next(home.rglob("report.json")).read_text())
    assert report["rates_per_day"]["degradation_depth_um"] == pytest.approx(1.0, rel=0.1)


def test_a_report_of_the_cli_and_a_foreign_json_side_by_side(home):
    from unified_framework.cli.main import main

    labels = home / "l.tif"
    assert (
        main(
            [
                "sample",
                "implant",
                str(home / "s.tif"),
                "--gt",
                str(labels),
                "--analytic",
                "--shape",
                "8",
                "96",
                "96",
            ]
        )
        == 0
    )
    assert main(["quantify", str(labels), "--out", str(home / "one.json"), "--shells", "2"]) == 0
    (home / "other.json").write_text(json.dumps({"not": "a report"}))
    app = open_page("analysis")
    assert_clean(app)
    assert len(app.multiselect(key="analysis_reports").options) == 1
    assert any("No thickness map" in str(c.value) for c in app.caption)


def test_uncertainty_ranges_assigned_and_sampled_are_shown(home):
    import numpy as np

    from unified_framework.cli.main import main
    from unified_framework.io import read_volume

    labels = home / "l.tif"
    args = ["sample", "implant", str(home / "s.tif"), "--gt", str(labels), "--analytic"]
    assert main([*args, "--shape", "4", "96", "96"]) == 0
    lab = read_volume(labels).data
    prob = np.stack([(lab == c).astype(np.float32) for c in range(4)])
    prob[2:, :, 40:56, 40:56] = 0.5
    np.save(home / "p.npy", prob)
    out = home / "u.json"
    command = ["quantify", str(labels), "--out", str(out), "--shells", "0"]
    assert main([*command, "--uncertainty", "sample", str(home / "p.npy"), "--samples", "2"]) == 0
    app = open_page("analysis")
    assert_clean(app)
    (frame,) = [f.value for f in app.dataframe if "sampled mean" in f.value.columns]
    row = frame[frame["quantity"] == "residual_volume_mm3"].iloc[0]
    assert (
        row["assigned low"] <= row["sampled 2.5 %"] <= row["sampled 97.5 %"] <= row["assigned high"]
    )
    assert any(c.proto.id for c in app.get("plotly_chart"))
    app.selectbox(key="analysis_uncertainty_quantity").set_value("layer_volume_mm3").run()
    assert_clean(app)
