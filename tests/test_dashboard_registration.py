"""The dashboard's Registration page, driven with Streamlit's AppTest (no SLURM job needed)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import streamlit as st
from apptest_pages import assert_clean, open_page  # the `home` fixture comes with it (conftest)
from components import registration  # apptest_pages put dashboard/ on sys.path


def test_registers_a_phantom_pair_and_shows_slices_jacobian_and_quality(home):
    app = open_page("registration")
    assert_clean(app)
    assert any("No registration result" in str(i.value) for i in app.info)
    app.number_input(key="registration_side").set_value(32)
    app.button(key="registration_create").click().run()
    assert_clean(app)
    (table,) = [
        frame.value
        for frame in app.dataframe
        if list(frame.value.columns) == ["figure", "before", "after"]
    ]
    dice = table[table["figure"] == "mean Dice"].iloc[0]
    assert float(dice["after"]) > float(dice["before"])
    keys = {chart.proto.id for chart in app.get("plotly_chart")}
    assert len(keys) == 5  # fixed, moving, warped, comparison, Jacobian
    app.segmented_control(key="registration_mode").set_value("checkerboard").run()
    assert_clean(app)
    app.slider(key="registration_tile").set_value(4).run()
    assert_clean(app)
    report = json.loads(next(home.rglob("quality.json")).read_text())
    assert report["method"] == "convexadam"


def test_inputs_outside_the_job_folders_are_not_read(home, tmp_path):
    app = open_page("registration")
    app.number_input(key="registration_side").set_value(32)
    app.button(key="registration_create").click().run()
    result = next(home.rglob("quality.json"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(result.parent.parent / "fixed.tif", outside / "fixed.tif")
    report = json.loads(result.read_text())
    report["sources"]["fixed"] = str(outside / "fixed.tif")
    result.write_text(json.dumps(report))
    st.cache_data.clear()
    app = open_page("registration")
    assert_clean(app)
    assert any("outside your job folders" in str(w.value) for w in app.warning)


def test_blend_and_checkerboard():
    fixed = np.zeros((4, 4), np.uint8)
    warped = np.full((4, 4), 200, np.uint8)
    assert registration.blend(fixed, warped, 0.0)[..., 0].max() == 0
    assert registration.blend(fixed, warped, 1.0)[..., 0].min() == 200
    assert registration.blend(fixed, warped, 0.5)[0, 0, 0] == 100
    board = registration.checkerboard(fixed, warped, 2)[..., 0]
    assert board[0, 0] == 0 and board[0, 2] == 200 and board[2, 2] == 0
