"""The dashboard's Annotate page with Streamlit's AppTest, and its canvas-to-labels logic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apptest_pages import assert_clean, open_page  # the `home` fixture comes with it (conftest)
from components import annotate  # apptest_pages put dashboard/ on sys.path

from unified_framework.active_learning import loop
from unified_framework.active_learning.pool import IGNORE
from unified_framework.active_learning.project import Project
from unified_framework.io import read_volume


def _tiny(project: Project) -> None:
    with project.locked() as state:
        state["config"] = {**state["config"], "steps": 3, "batch_size": 2}


def test_create_query_and_save_labels(home):
    app = open_page("annotate")
    assert_clean(app)
    assert any("No active-learning project" in str(i.value) for i in app.info)
    app.number_input(key="annotate_new_side").set_value(32)
    app.button(key="annotate_create").click().run()
    assert_clean(app)
    folder = home / annotate.PROJECTS / "phantom"
    assert Project(folder).state["held_out"]
    app.button(key="annotate_query").click().run()
    assert_clean(app)
    pending = Project(folder).pending
    assert len(pending) == 4 and app.selectbox(key="annotate_slice").value == pending[0].key
    app.toggle(key="annotate_fill").set_value(True).run()
    app.button(key="annotate_save").click().run()
    assert_clean(app)
    project = Project(folder)
    assert [s.key for s in project.labelled] == [pending[0].key]
    labels = project.labels(pending[0])
    assert labels.shape == project.pool.slice_shape(pending[0]) and (labels == 0).all()
    assert project.state["labelled"][pending[0].key]["source"] == "annotate"
    assert app.selectbox(key="annotate_slice").value == pending[1].key


@pytest.mark.slow  # trains a round and scores the held-out volume (30 s idle, more when loaded)
def test_proposal_uncertainty_and_learning_curve_after_a_round(home):
    folder = annotate.create_sample_project(home, "p", side=32)
    project = Project(folder)
    _tiny(project)
    picked = loop.query(project)
    for sid in picked:
        labels_path = Path(project.state["volumes"][sid.volume]).with_name(
            f"volume{sid.volume}_labels.tif"
        )
        truth = np.asarray(read_volume(labels_path).data)
        project.save_labels(sid, truth[sid.index])
    loop.train(project)
    loop.query(Project(folder))
    app = open_page("annotate")
    assert_clean(app)
    captions = [str(image.proto) for image in app.get("image")]
    assert any("model proposal" in c for c in captions) and any(
        "uncertainty" in c for c in captions
    )
    assert app.toggle(key="annotate_use_proposal").value
    assert len(app.get("vega_lite_chart")) == 1  # the learning curve
    app.button(key="annotate_accept").click().run()
    assert_clean(app)
    accepted = Project(folder)
    sid = accepted.rounds[-1]["queried"][0]
    assert accepted.state["labelled"][sid]["source"] == "proposal"
    assert annotate.training_progress(accepted) is None  # round 2 not trained yet
    assert annotate.learning_curve(accepted)[0]["labelled slices"] == len(project.labelled)


def test_strokes_become_labels_at_the_slice_resolution():
    base = np.full((4, 5), IGNORE, np.uint8)
    canvas = np.zeros((12, 15, 4), np.uint8)
    canvas[0:6, 0:3] = [*annotate.rgb(annotate.colour(1)), 255]  # rows 0-1, column 0
    canvas[9:12, 12:15] = [*annotate.rgb(annotate.colour(3)), 200]  # row 3, column 4
    canvas[3:6, 6:9] = [250, 130, 20, 90]  # faint (anti-aliased edge): ignored
    canvas[6, 9] = [*annotate.rgb(annotate.colour(2)), 255]  # a ninth of a block: ignored
    canvas[6:9, 3] = [*annotate.rgb(annotate.colour(2)), 255]  # a third of a block: painted
    labels = annotate.labels_from_canvas(canvas, base, 4, 3)
    expected = base.copy()
    expected[0:2, 0] = 1
    expected[3, 4] = 3
    expected[2, 1] = 2
    np.testing.assert_array_equal(labels, expected)
    assert annotate.labels_from_canvas(None, base, 4, 3) is not base
