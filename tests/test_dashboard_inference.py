"""The Inference page (AppTest): run a model on an image here, see the overlay; start, use and stop a predict service."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import zarr
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture
from streamlit.testing.v1 import AppTest

from unified_framework.inference import load_model, predict_array
from unified_framework.inference.service import running_services
from unified_framework.io import read_volume

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
sys.path.insert(0, str(REPO / "dashboard"))

from components import inference  # noqa: E402 - needs the dashboard folder on sys.path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("MDLMA_HOME", str(folder))
    monkeypatch.setenv("MDLMA_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("MDLMA_CATALOGUE", str(folder / "catalogue.sqlite"))
    st.cache_data.clear()
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=180)
    app.run()
    app.switch_page("views/inference.py").run()
    return app


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.message for e in app.exception]


def test_runs_the_sample_here_and_shows_the_overlay(home):
    app = open_page()
    assert_clean(app)
    assert any("Choose a model" in str(i.value) for i in app.info)
    app.button(key="inference_sample").click().run()
    assert_clean(app)
    assert app.text_input(key="inference_model_path").value == "inference/sample/model.pt"
    app.text_input(key="inference_patch").set_value("64 64")
    app.number_input(key="inference_budget").set_value(64)
    app.button(key="inference_run").click().run()
    assert_clean(app)
    out = home / "inference" / "image-model.zarr"
    labels = zarr.open_group(str(out), mode="r")["0"][:]
    model_path, image = inference.make_sample(home)
    data = np.asarray(read_volume(image).data, np.float32)
    expected = predict_array(load_model(model_path), data[None], patch=(64, 64)).argmax(0)
    assert np.array_equal(labels, expected)  # the page's run is the engine's answer
    assert [c.proto.id for c in app.get("plotly_chart")]  # the overlay
    # bad input: a tile larger than the image, one line before any work
    app.text_input(key="inference_patch").set_value("512 512")
    app.button(key="inference_run").click().run()
    assert any("larger than the image" in str(e.value) for e in app.error), (
        [e.value for e in app.error],
        [e.value for e in app.info],
        app.text_input(key="inference_out").value,
    )
    # an output that exists is refused
    app.text_input(key="inference_patch").set_value("64 64")
    app.text_input(key="inference_out").set_value("inference/image-model.zarr")
    app.button(key="inference_run").click().run()
    assert any("already exists" in str(e.value) for e in app.error)


def test_every_model_kind_is_offered_and_an_imported_nnunet_model_runs(home, tmp_path):
    """nnU-Net (imported), HRNet and Keras models appear in the model list; the nnU-Net one runs."""
    from tiny_models import tiny_hrnet, tiny_keras, tiny_nnunet

    from unified_framework.cli.main import main
    from unified_framework.io import write_volume

    nnunet_model = home / "models" / "tiny-2d"
    result = tiny_nnunet(tmp_path / "results", "2d")
    assert main(["nnunet", "import", str(result), "--out", str(nnunet_model)]) == 0
    (home / "al" / "models").mkdir(parents=True)
    tiny_hrnet(home / "al" / "models" / "round-001.pt")
    tiny_keras(home / "models" / "net.keras")
    grey = np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)
    write_volume(home / "slide.tif", grey)
    app = open_page()
    assert_clean(app)
    box = app.selectbox(key="inference_model_found")
    offered = " | ".join(box.options)
    for label in (
        "models/tiny-2d · nnU-Net 2d",
        "al/models/round-001.pt · HRNet/U-Net (active learning)",
        "models/net.keras · Keras",
    ):
        assert label in offered, offered
    assert "checkpoint_final" not in offered  # a model folder's insides are not models
    box.set_value(str(nnunet_model)).run()
    app.text_input(key="inference_image_path").set_value("slide.tif").run()
    assert_clean(app)
    assert any("nnU-Net model folder" in str(c.value) for c in app.caption)
    app.text_input(key="inference_patch").set_value("16 16")
    app.number_input(key="inference_budget").set_value(64)
    app.button(key="inference_run").click().run()
    assert_clean(app)
    labels = zarr.open_group(str(home / "inference" / "slide-tiny-2d.zarr"), mode="r")["0"][:]
    model = load_model(nnunet_model)
    expected = predict_array(model, grey[None].astype(np.float32), patch=(16, 16)).argmax(0)
    assert labels.shape == (48, 40) and np.array_equal(labels, expected)


def test_starts_and_stops_a_predict_service(home):
    model_path, _ = inference.make_sample(home)
    app = open_page()
    port = free_port()
    app.multiselect(key="inference_serve_models").set_value([str(model_path)])
    app.number_input(key="inference_serve_port").set_value(port).run()
    app.button(key="inference_serve_start").click().run()
    assert_clean(app)
    try:
        (running,) = running_services(home)
        assert running["url"] == f"http://127.0.0.1:{port}" and running["models"] == ["model"]
        assert any("model" in str(frame.value.get("models", [""])[0]) for frame in app.dataframe)
        app.button(key="inference_stop").click().run()
        assert_clean(app)
        assert running_services(home) == []
    finally:
        for left in running_services(home):
            from unified_framework.inference.service import stop_service

            stop_service(left)


@pytest.mark.slurm
def test_submits_the_infer_array_and_shows_its_result(home, slurm_cluster):  # noqa: F811
    from conftest_slurm import wait_for_jobs

    app = open_page()
    app.button(key="inference_sample").click().run()
    app.text_input(key="inference_patch").set_value("64 64")
    app.number_input(key="inference_budget").set_value(64)
    app.number_input(key="inference_workers").set_value(2).run()
    app.button(key="inference_submit").click().run()
    assert_clean(app)
    (message,) = [str(s.value) for s in app.success]
    ids = message.split()[1:3]  # "Submitted ARRAY MERGE (array + merge) -> OUT"

    jobs = wait_for_jobs(ids, timeout=400, what="the infer array")
    assert {j.state for j in jobs} == {"COMPLETED"}, jobs
    app.button(key="inference_refresh").click().run()
    assert_clean(app)
    assert [c.proto.id for c in app.get("plotly_chart")]  # the merged result's overlay
