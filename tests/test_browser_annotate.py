"""The Annotate page in Debian's headless chromium: paint a stroke, save, the label file holds it.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``. The project is
made beforehand with the page's own helper (32-pixel phantoms) and its first (random)
query; there is no model yet, so the slice starts unlabelled (255) and the stroke, in
the default class (background, 0), is the only labelled part.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import (  # noqa: F401 - fixtures
    browser,
    click,
    dashboard,
    has_text,
    idle,
    screenshot,
    wait_until,
)

from unified_framework.active_learning import loop
from unified_framework.active_learning.pool import IGNORE
from unified_framework.active_learning.project import Project

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def _canvas(driver):
    """Fabric.js' drawing layer (the upper canvas), inside the component's shadow root if any."""
    return driver.execute_script(
        """
        const seen = [document];
        while (seen.length) {
          const root = seen.pop();
          const hit = root.querySelector('canvas.upper-canvas');
          if (hit) return hit;
          for (const el of root.querySelectorAll('*')) if (el.shadowRoot) seen.push(el.shadowRoot);
        }
        return null;
        """
    )


def test_paint_a_stroke_save_and_the_label_file_holds_it(dashboard, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains

    sys.path.insert(0, str(REPO / "dashboard"))
    from components.annotate import create_sample_project

    base, home = dashboard
    folder = create_sample_project(home, "browser", side=32)
    (sid,) = loop.query(Project(folder), batch_size=1)
    browser.get(f"{base}/annotate")
    wait_until(browser, has_text("Queried slices waiting for labels"), what="the annotate page")
    wait_until(browser, idle, what="the page to settle")
    canvas = wait_until(browser, _canvas, what="the canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    assert width >= 256 and height >= 256  # a 32-pixel slice shown 16x
    # A horizontal stroke across the middle third of the slice, 12 screen pixels wide.
    ActionChains(browser).move_to_element_with_offset(
        canvas, -width // 6, 0
    ).click_and_hold().pause(0.1).move_by_offset(width // 6, 0).pause(0.1).move_by_offset(
        width // 6, 0
    ).release().perform()
    wait_until(browser, has_text("1 stroke(s) painted"), what="the stroke to reach the app")
    wait_until(browser, idle, what="the page to settle")
    screenshot(browser, "annotate.png")
    click(browser, "//button[.//p[normalize-space(.)='Save labels']]", "the Save button")
    wait_until(
        browser,
        lambda d: sid.key in Project(folder).state["labelled"],
        what="the labels to be saved",
    )
    labels = Project(folder).labels(sid)
    cols = labels.shape[1]
    painted = np.argwhere(labels != IGNORE)
    assert painted.size, "the stroke is not in the saved labels"
    assert (labels[labels != IGNORE] == 0).all()  # the default class, background
    # a horizontal stroke, a third of the slice long, 12 screen pixels (< 1 slice pixel) wide
    assert np.ptp(painted[:, 0]) <= 2
    assert cols / 3 - 3 <= np.ptp(painted[:, 1]) + 1 <= cols / 3 + 3
    assert (labels[:, : cols // 4] == IGNORE).all()  # nothing painted on the left
