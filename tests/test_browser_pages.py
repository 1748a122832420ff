"""Every method page in Debian's headless chromium (the running dashboard under a URL prefix).

One module so that the pages share one dashboard and one browser (the module-scoped fixtures
of ``test_browser_dashboard``). Each page's result folder is made beforehand with the page's
own helper or the command line; the test waits until the page shows its headings, tables
and charts, then takes a screenshot into ``tests/artifacts``. The Virtual histology and
Annotate pages get their own tests (a 3D view to scroll to; a stroke to paint and save), as does
the Inference page (a run started from the page, a predict service listed).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import (  # noqa: F401 - fixtures
    browser,
    click,
    dashboard,
    has_element,
    has_text,
    idle,
    screenshot,
    set_text,
    wait_until,
)

from unified_framework.active_learning import loop
from unified_framework.active_learning.pool import IGNORE
from unified_framework.active_learning.project import Project
from unified_framework.cli.main import main
from unified_framework.histology import normal_from_angles
from unified_framework.inference.service import start_service, stop_service, wait_for_service

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dashboard"))
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def _analysis(home: Path) -> None:
    from components.analysis import make_sample_analysis

    make_sample_analysis(home)


def _registration(home: Path) -> None:
    from components.registration import make_sample_registration

    make_sample_registration(home, (32, 32, 32), seed=0, multimodal=False)


def _comparison(home: Path) -> None:
    from test_dashboard_methods import make_comparison

    make_comparison(home)


def _search(home: Path) -> None:
    from test_dashboard_search import make_study

    make_study(home)


@dataclass(frozen=True)
class Page:
    """A page, how its result is made, and what it must show once rendered."""

    path: str
    prepare: Callable[[Path], None]
    texts: tuple[str, ...]
    tables: int
    charts: int
    screenshot: str
    #: a second screenshot with the first chart scrolled to the top (a docs figure)
    close_up: str = ""
    #: other elements (``data-testid``) the page must show
    also: tuple[str, ...] = ()


PAGES = [
    # resources and scores tables (drawn on canvases), the Dice bar chart, one overlay per
    # method; the submit form in an expander
    Page(
        "compare?view=methods",
        _comparison,
        ("Segmentation comparison", "Held-out case"),
        2,
        3,
        "comparison.png",
        also=("stExpander",),
    ),
    # quantities table; histogram, BV/TV curve, trend, thickness map
    Page("analysis", _analysis, ("Quantities", "Thickness map"), 1, 4, "analysis.png"),
    # the quality table is drawn on a canvas (its text is not in the DOM): count it instead
    Page(
        "registration",
        _registration,
        ("Quality before and after", "Jacobian determinant"),
        1,
        5,
        "registration.png",
    ),
    Page(
        "search",
        _search,
        ("Score landscape", "Parallel coordinates"),
        1,
        3,
        "parameter-search.png",
        close_up="parameter-search-landscape.png",  # the 3D landscape
    ),
]


@pytest.mark.parametrize("page", PAGES, ids=[p.path.split("?")[0] for p in PAGES])
def test_page_shows_its_tables_and_charts(page: Page, dashboard, browser):  # noqa: F811
    base, home = dashboard
    page.prepare(home)
    browser.get(f"{base}/{page.path}")
    for text in page.texts:
        wait_until(browser, has_text(text), what=f"'{text}' on {page.path}")
    wait_until(browser, idle, what="the page to settle")
    # tables and charts render after the script run ends
    wait_until(browser, has_element("stDataFrame", page.tables), what="the tables")
    wait_until(browser, has_element("stPlotlyChart", page.charts), what="the charts")
    charts = browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')
    assert len(charts) == page.charts
    for test_id in page.also:
        assert browser.find_elements("css selector", f'[data-testid="{test_id}"]'), test_id
    screenshot(browser, page.screenshot)
    if page.close_up:
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", charts[0])
        wait_until(browser, idle, what="the page to settle after scrolling")
        screenshot(browser, page.close_up)


def test_histology_page_shows_overlay_plane_and_labels(dashboard, browser):  # noqa: F811
    base, home = dashboard
    work = home / "histology"
    sample = [
        "sample",
        "section",
        str(work / "section.tif"),
        "--volume",
        str(work / "phantom.zarr"),
    ]
    sample += ["--truth", str(work / "truth.json"), "--shape", "48", "48", "48", "--seed", "7"]
    sample += ["--labels", str(work / "classes.tif"), "--volume-labels", str(work / "labels.zarr")]
    assert main(sample) == 0
    truth = json.loads((work / "truth.json").read_text())
    axis = normal_from_angles(truth["tilt_deg"] + 3, truth["azimuth_deg"])
    match = ["histology", "match", str(work / "phantom.zarr"), str(work / "section.tif")]
    match += [
        "--axis",
        *map(str, axis),
        "--cone",
        "6",
        "--candidates",
        "2",
        "--register",
        "bspline",
    ]
    match += [
        "--volume-labels",
        str(work / "labels.zarr"),
        "--section-labels",
        str(work / "classes.tif"),
    ]
    assert main([*match, "--out", str(work / "match")]) == 0
    browser.get(f"{base}/histology")
    wait_until(browser, has_text("Where the section lies in the volume"), what="the histology page")
    wait_until(browser, has_text("Transferred labels"), what="the transferred labels")
    wait_until(browser, idle, what="the page to settle")
    # score over tilts, score over offsets, the 3D plane
    charts = browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')
    assert len(charts) == 3
    assert browser.find_elements("css selector", '[data-testid="stDataFrame"]')
    screenshot(browser, "histology.png")
    # The same page scrolled to the 3D view of the located plane and the transferred labels.
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", charts[2])
    wait_until(browser, idle, what="the page to settle")
    screenshot(browser, "histology_3d.png")


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
    from components.annotate import create_sample_project
    from selenium.webdriver.common.action_chains import ActionChains

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


def test_inference_page_runs_the_sample_and_lists_the_service(dashboard, browser):  # noqa: F811
    from components.inference import make_sample

    base, home = dashboard
    model, _ = make_sample(home, side=128)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = start_service([model], port, home)
    try:
        wait_for_service(port, process, home)
        browser.get(f"{base}/inference")
        wait_until(browser, has_text("Predict service"), what="the inference page")
        wait_until(browser, has_element("stDataFrame"), what="the running services")
        set_text(browser, "Model path", "inference/sample/model.pt")
        set_text(browser, "Image path", "inference/sample/image.tif")
        wait_until(browser, has_text("Tiles, memory and workers"), what="the settings")
        set_text(browser, "tile size", "64 64")
        click(browser, "//button[.//p[normalize-space(.)='Run here']]", "the Run here button")
        wait_until(browser, has_text("done:"), timeout=180, what="the run to finish")
        wait_until(browser, has_element("stPlotlyChart"), what="the result overlay")
        wait_until(browser, idle, what="the page to settle")
        assert (home / "inference" / "image-model.zarr" / "0").is_dir()
        screenshot(browser, "inference.png")
    finally:
        stop_service({"pid": process.pid, "state": str(home / "services" / f"serve-{port}.json")})
        process.wait(10)
