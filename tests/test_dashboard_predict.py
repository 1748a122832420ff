"""The comparison and Annotate pages ask a real ``mdlma serve`` (loopback, started here) for a slice's labels."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_inference import tiny_sun

from unified_framework.active_learning import loop
from unified_framework.active_learning.project import Project
from unified_framework.inference import load_model, predict_array
from unified_framework.inference.service import (
    running_services,
    start_service,
    stop_service,
    wait_for_service,
)
from unified_framework.io import read_volume

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
sys.path.insert(0, str(REPO / "dashboard"))

from components import annotate, compare  # noqa: E402 - needs the dashboard folder on sys.path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A home folder with a running ``mdlma serve`` of a tiny 3-class SUN model on loopback."""
    home = tmp_path_factory.mktemp("predict") / "home"
    home.mkdir()
    model = tiny_sun(home, name="tiny.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = start_service([model], port, home, log=home / "serve.log")
    try:
        state = wait_for_service(port, process, home)
        yield home, model, state
    finally:
        stop_service({"pid": process.pid, "state": str(home / "services" / f"serve-{port}.json")})
        process.wait(10)


@pytest.fixture
def home(served, monkeypatch) -> Path:
    folder = served[0]
    monkeypatch.setenv("MDLMA_HOME", str(folder))
    st.cache_data.clear()
    st.cache_resource.clear()
    return folder


def open_page(name: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=180)
    app.run()
    app.switch_page(f"views/{name}.py").run()
    return app


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.message for e in app.exception]


def expected_labels(model: Path, plane: np.ndarray) -> np.ndarray:
    patch = tuple(min(16, s - s % 2) for s in plane.shape)
    probs = predict_array(load_model(model), plane[None].astype(np.float32), patch=patch)
    return probs.argmax(0)


def test_the_service_state_names_url_models_and_owner_only(served):
    home, _, state = served
    (found,) = running_services(home)
    assert found["url"] == state["url"] and found["models"] == ["tiny"]
    assert Path(found["state"]).stat().st_mode & 0o077 == 0  # may hold a token


def test_comparison_page_predicts_the_shown_slice(home, served):
    dataset = compare.make_phantom_dataset(home, (8, 32, 32), seed=0)
    app = open_page("compare")
    assert_clean(app)
    assert app.selectbox(key="compare_adhoc_service").value == 0
    app.button(key="compare_adhoc_predict").click().run()
    assert_clean(app)
    titles = {c.proto.id for c in app.get("plotly_chart")}
    assert len(titles) >= 2  # service labels and ground truth
    assert any("agrees with the ground truth" in str(c.value) for c in app.caption)
    # what the page showed is the service's answer for the middle z slice
    plane = np.asarray(read_volume(dataset.image).data)[4]
    key = "compare_adhoc_answer"
    assert np.array_equal(app.session_state[key][1], expected_labels(served[1], plane))


def test_annotate_page_predicts_and_saves_the_service_labels(home, served):
    folder = annotate.create_sample_project(home, "p", side=32)
    project = Project(folder)
    loop.query(project)
    app = open_page("annotate")
    assert_clean(app)
    sid = project.pending[0]
    app.button(key="annotate_adhoc_predict").click().run()
    assert_clean(app)
    labels = app.session_state["annotate_adhoc_answer"][1]
    image = project.pool.image(sid)
    assert np.array_equal(labels, expected_labels(served[1], np.asarray(image)[0]))
    app.button(key="annotate_adhoc_accept").click().run()
    assert_clean(app)
    again = Project(folder)
    assert again.state["labelled"][sid.key]["source"] == "service"
    assert np.array_equal(again.labels(sid), labels)


def test_a_stopped_service_is_reported_in_one_line(home, served, monkeypatch):
    """A service that died after announcing itself: the page says so, nothing crashes."""
    import components.predict as predict_component

    dead = {**served[2], "url": "http://127.0.0.1:9"}  # nothing listens on port 9
    monkeypatch.setattr(predict_component, "running_services", lambda _home: [dead])
    folder = annotate.create_sample_project(home, "q", side=32)
    loop.query(Project(folder))
    app = open_page("annotate")
    app.selectbox(key="annotate_project").set_value(str(folder)).run()
    app.button(key="annotate_adhoc_predict").click().run()
    assert_clean(app)
    assert any("not reachable" in str(e.value) for e in app.error)
