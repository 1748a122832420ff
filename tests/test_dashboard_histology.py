"""The Virtual histology page driven with Streamlit's AppTest on a real `mdlma histology match` result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from apptest_pages import assert_clean, open_page, use_home
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture: the start page (Resources) asks the cluster
from streamlit.testing.v1 import AppTest

from unified_framework.cli.main import main
from unified_framework.histology import normal_from_angles

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def match_home(tmp_path_factory) -> Path:
    """An MDLMA home with one real match result (48^3 phantom, narrow cone: about 15 s)."""
    home = tmp_path_factory.mktemp("home")
    work = home / "histology"
    assert (
        main(
            [
                "sample",
                "section",
                str(work / "section.tif"),
                "--volume",
                str(work / "phantom.zarr"),
                "--truth",
                str(work / "truth.json"),
                "--shape",
                "48",
                "48",
                "48",
                "--seed",
                "7",
                "--labels",
                str(work / "classes.tif"),
                "--volume-labels",
                str(work / "labels.zarr"),
            ]
        )
        == 0
    )
    truth = json.loads((work / "truth.json").read_text())
    axis = normal_from_angles(truth["tilt_deg"] + 4, truth["azimuth_deg"])
    assert (
        main(
            [
                "histology",
                "match",
                str(work / "phantom.zarr"),
                str(work / "section.tif"),
                "--axis",
                *map(str, axis),
                "--cone",
                "8",
                "--candidates",
                "2",
                "--volume-labels",
                str(work / "labels.zarr"),
                "--section-labels",
                str(work / "classes.tif"),
                "--out",
                str(work / "match"),
            ]
        )
        == 0
    )
    return home


def open_match_page(home: Path, monkeypatch) -> AppTest:
    use_home(home, monkeypatch)
    app = open_page("histology", timeout=90)
    assert_clean(app)
    return app


def test_page_shows_match_overlay_landscape_and_candidates(match_home, monkeypatch, slurm_cluster):  # noqa: F811
    app = open_match_page(match_home, monkeypatch)
    assert app.selectbox(key="histology_match").value == "histology/match"
    caption = " ".join(str(c.value) for c in app.caption)
    assert "tilt" in caption and "NMI" in caption
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text")
        for c in app.get("plotly_chart")
    ]
    assert "score over tilts" in titles and "score over offsets" in titles
    assert "located plane in the volume" in titles
    table = app.dataframe[0].value
    assert (
        list(table["rank"]) == [1, 2] and table["score_nmi"].iloc[0] >= table["score_nmi"].iloc[1]
    )
    app.slider(key="histology_alpha").set_value(1.0).run()
    assert not app.exception
    app.radio(key="histology_overlay").set_value("checkerboard").run()
    app.slider(key="histology_tiles").set_value(4).run()
    assert not app.exception, [e.message for e in app.exception]


def test_page_shows_registration_plane_labels_and_submits_a_narrower_search(
    match_home,
    monkeypatch,
    slurm_cluster,  # noqa: F811
):
    from unified_framework import hpc

    app = open_match_page(match_home, monkeypatch)
    assert app.toggle(key="histology_registered").value is True
    tables = [d.value for d in app.dataframe]
    quality = next(t for t in tables if "figure" in t.columns)
    assert "folding voxels (det J <= 0)" in list(quality["figure"])
    captions = [str(i.caption) for i in app.get("imgs")] if app.get("imgs") else []
    text = " ".join(str(c.value) for c in app.caption) + " ".join(captions)
    assert "located normal" in text
    points = next(t for t in tables if "inside volume" in t.columns)
    assert {1, 2} <= set(points["label"])
    # The 3D view with orthoslices of the binned volume.
    app.toggle(key="histology_slices").set_value(True).run()
    assert not app.exception, [e.message for e in app.exception]
    spec = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    plane = next(
        s for s in spec if s["layout"].get("title", {}).get("text") == "located plane in the volume"
    )
    assert {t["type"] for t in plane["data"]} >= {"mesh3d", "surface", "scatter3d"}
    # Re-run narrower: the script carries the located normal as the cone axis.
    app.number_input(key="histology_rerun_cone").set_value(5.0).run()
    script = " ".join(str(c.value) for c in app.code)
    assert "--cone 5" in script and "--axis" in script and "histology match" in script
    calls = []

    def fake_submit(template, values, cwd=None, **kwargs):
        calls.append(values)
        return type("Record", (), {"job_ids": ["4242"], "path": Path(cwd) / "record"})()

    monkeypatch.setattr(hpc, "submit", fake_submit)
    app.button(key="histology_rerun_submit").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert calls and calls[0]["cutting_axis"] == "none" and calls[0]["out"].endswith("match-narrow")
    assert any("4242" in str(s.value) for s in app.success)


def test_page_without_results_says_how_to_make_one(tmp_path, monkeypatch, slurm_cluster):  # noqa: F811
    app = open_match_page(tmp_path, monkeypatch)
    assert any("mdlma histology match" in str(i.value) for i in app.info)


def test_blend_and_checkerboard():
    from components import histology

    a, b = np.zeros((4, 4)), np.ones((4, 4))
    assert np.allclose(histology.blend(a, b, 0.3), 0.3)
    board = histology.checkerboard(a, b, 2)
    assert board[0, 0] == 0 and board[0, 3] == 1 and board[3, 3] == 0
