"""The Parameter search page in Debian's headless chromium (the running dashboard under a URL prefix): a screenshot.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the study is made
beforehand with the AppTest module's helper (a 6-trial search on an 8x32x32 phantom).
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


def test_search_page_shows_the_landscape(dashboard, browser):  # noqa: F811
    sys.path.insert(0, str(REPO / "tests"))
    from test_dashboard_search import make_study

    base, home = dashboard
    make_study(home)
    browser.get(f"{base}/search")
    wait_until(browser, has_text("Score landscape"), what="the parameter search page")
    wait_until(browser, has_text("Parallel coordinates"), what="the parallel coordinates")
    wait_until(browser, idle, what="the page to settle")
    wait_until(browser, has_element("stDataFrame"), what="the best trials table")
    wait_until(browser, has_element("stPlotlyChart", 3), what="the charts")
    assert len(browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')) == 3
    screenshot(browser, "parameter-search.png")
    # The 3D landscape itself (docs/parameter_search.png): scrolled to the top of the view.
    chart = browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", chart)
    wait_until(browser, idle, what="the page to settle after scrolling")
    screenshot(browser, "parameter-search-landscape.png")
