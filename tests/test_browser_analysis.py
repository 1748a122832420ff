"""The Analysis page in Debian's headless chromium (the running dashboard under a URL prefix): a screenshot.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the report is made
beforehand with the page's own helper (an analytic degrading-cylinder time series).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import (
    browser,  # noqa: F401 - fixture
    dashboard,  # noqa: F401 - fixture
    has_element,
    has_text,
    idle,
    screenshot,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def test_analysis_page_shows_table_histogram_curve_and_map(dashboard, browser):  # noqa: F811
    sys.path.insert(0, str(REPO / "dashboard"))
    from components.analysis import make_sample_analysis

    base, home = dashboard
    make_sample_analysis(home)
    browser.get(f"{base}/analysis")
    wait_until(browser, has_text("Quantities"), what="the analysis page")
    wait_until(browser, has_text("Thickness map"), what="the thickness map")
    wait_until(browser, idle, what="the page to settle")
    wait_until(browser, has_element("stDataFrame"), what="the quantities table")
    wait_until(browser, has_element("stPlotlyChart", 4), what="the charts")
    assert len(browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')) == 4
    screenshot(browser, "analysis.png")
