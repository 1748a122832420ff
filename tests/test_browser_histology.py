"""The Virtual histology page in Debian's headless chromium (the running dashboard under a URL prefix): a screenshot.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the result folder
is made beforehand with the command line (a 48³ phantom section, a narrow cone around
the true plane, B-spline registration, labels transferred both ways).
"""

from __future__ import annotations

import json

import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import browser, dashboard, has_text, idle, screenshot, wait_until  # noqa: F401 - fixtures

from unified_framework.cli.main import main
from unified_framework.histology import normal_from_angles

pytestmark = [pytest.mark.browser, pytest.mark.slurm]


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
