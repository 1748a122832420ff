"""The Parameter search and Denoising pages driven with Streamlit's AppTest on real results."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from apptest_pages import assert_clean, open_page, use_home
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture: the start page (Resources) asks the cluster
from streamlit.testing.v1 import AppTest

from unified_framework.data import make_implant_phantom
from unified_framework.denoise import denoise
from unified_framework.io import write_volume
from unified_framework.search import run_search

pytestmark = pytest.mark.slurm

PIPELINE = {
    "steps": [
        {
            "step": "denoise.gaussian",
            "name": "smooth",
            "params": {"sigma": {"low": 0.3, "high": 2.0, "log": True}},
        },
        {
            "step": "segment.multi-otsu",
            "name": "otsu",
            "params": {"classes": {"choices": [3, 4]}, "smoothing": {"low": 0.0, "high": 1.0}},
        },
        {
            "step": "post.remove-small",
            "name": "clean",
            "params": {"min_size": {"low": 0, "high": 16}},
        },
    ]
}


def make_study(home: Path, trials: int = 6) -> Path:
    """A study with ``trials`` trials (one failing: classes 99) under ``home/search``."""
    image, labels = make_implant_phantom((8, 32, 32), seed=2)
    work = home / "search"
    work.mkdir(parents=True, exist_ok=True)
    write_volume(work / "img.tif", image)
    write_volume(work / "gt.tif", labels)
    write_volume(work / "smooth.tif", denoise(image, "gaussian", {"sigma": 1.0}))
    spec = json.loads(json.dumps(PIPELINE))
    spec["steps"][1]["params"]["classes"]["choices"] = [3, 4, 99]
    (work / "pipe.yml").write_text(yaml.safe_dump(spec))
    run_search(
        work / "study",
        work / "pipe.yml",
        [[str(work / "img.tif"), str(work / "gt.tif")]],
        trials=trials,
        executor="inprocess",
        seed=3,
    )
    return work


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    make_study(home)
    return home


def open_study_page(home: Path, page: str, monkeypatch) -> AppTest:
    use_home(home, monkeypatch)
    app = open_page(page, timeout=120)
    assert_clean(app)
    return app


def plotly_values(data) -> np.ndarray:
    """An array of a plotly figure's JSON: a list, or plotly's base64 typed array."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data)


def test_search_page_shows_progress_best_trials_and_landscape(home, monkeypatch, slurm_cluster):  # noqa: F811
    app = open_study_page(home, "search", monkeypatch)
    assert app.selectbox(key="search_study").value == "search/study"
    best = app.dataframe[0].value
    assert (
        list(best["score"]) == sorted(best["score"], reverse=True)
        and "smooth.sigma" in best.columns
    )
    specs = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    titles = [s["layout"].get("title", {}).get("text", "") for s in specs]
    assert any(t.startswith("score landscape (pca") for t in titles)
    # Four parameters placed in 3D (PCA below 10 trials), each point coloured by its score.
    landscape = next(s for s, t in zip(specs, titles) if t.startswith("score landscape"))
    trace = landscape["data"][0]
    assert trace["type"] == "scatter3d" and len(plotly_values(trace["z"])) == len(best)
    assert sorted(plotly_values(trace["marker"]["color"])) == sorted(best["score"])
    assert any(t.startswith("dice over") for t in titles) and any(
        t.startswith("parameters and") for t in titles
    )
    app.selectbox(key="search_a").set_value("clean.min_size").run()
    assert not app.exception, [e.message for e in app.exception]
    cached = json.loads((home / "search" / "study" / "landscape.json").read_text())
    assert cached["version"] == 2 and {"x", "y", "z"} <= set(cached["rows"][0])
    app.button(key="search_run_best").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.selectbox(key="composer_template").value == "pipeline"
    assert (home / "search" / "study" / "best.yml").exists()


def test_search_page_without_studies_says_how(tmp_path, monkeypatch, slurm_cluster):  # noqa: F811
    app = open_study_page(tmp_path, "search", monkeypatch)
    assert any("mdlma search run" in str(i.value) for i in app.info)


def test_denoise_page_before_after_difference_profile(home, monkeypatch, slurm_cluster):  # noqa: F811
    app = open_study_page(home, "denoise", monkeypatch)
    app.text_input(key="denoise_before").set_value("search/img.tif").run()
    app.text_input(key="denoise_after").set_value("search/smooth.tif").run()
    assert not app.exception, [e.message for e in app.exception]
    titles = [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")
        for c in app.get("plotly_chart")
    ]
    assert titles == ["line profile, row 16"]
    assert any("noise removed" in str(c.value) for c in app.caption)
    app.slider(key="denoise_slice").set_value(2).run()
    app.radio(key="denoise_axis").set_value(2).run()
    assert not app.exception, [e.message for e in app.exception]
    app.text_input(key="denoise_after").set_value(
        "search/gt.tif"
    ).run()  # other dtype, same shape: fine
    app.text_input(key="denoise_after").set_value("search/missing.tif").run()
    assert app.error and "no such file" in app.error[0].value


def test_before_after_helpers():
    from components import search

    a = np.zeros((3, 4, 5), np.float32)
    b = a + 1
    x, y, diff = search.before_after(a, b, 1, 2)
    assert x.shape == (3, 5) and np.all(diff == 1)
    profile = search.line_profile(x, y, 1)
    assert len(profile) == 10 and set(profile["volume"]) == {"before", "after"}


def test_denoise_page_takes_paths_from_the_link(home, monkeypatch, slurm_cluster):  # noqa: F811
    use_home(home, monkeypatch)
    paths = {"before": str(home / "search/img.tif"), "after": str(home / "search/smooth.tif")}
    app = open_page("denoise", timeout=120, **paths)
    assert_clean(app)
    assert app.text_input(key="denoise_after").value.endswith("smooth.tif")
    assert any("noise removed" in str(c.value) for c in app.caption)
