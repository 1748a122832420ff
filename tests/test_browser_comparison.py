"""The Segmentation comparison page's 'every method' view in Debian's headless chromium: a screenshot.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the finished
comparison folder (two methods, merged by ``unified_framework.compare.merge``) comes
from ``test_dashboard_methods.make_comparison``.
"""

from __future__ import annotations

import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import (  # noqa: F401 - fixtures
    browser,
    dashboard,
    has_element,
    has_text,
    idle,
    screenshot,
    wait_until,
)
from test_dashboard_methods import make_comparison

pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def test_comparison_page_shows_table_bar_chart_and_overlays(dashboard, browser):  # noqa: F811
    base, home = dashboard
    make_comparison(home)
    browser.get(f"{base}/compare?view=methods")
    wait_until(browser, has_text("Segmentation comparison"), what="the comparison page")
    wait_until(browser, has_text("Held-out case"), what="the overlays section")
    wait_until(browser, idle, what="the page to settle")
    # resources and scores tables (drawn on canvases), the bar chart and one overlay per method
    wait_until(browser, has_element("stDataFrame", 2), what="the two tables")
    wait_until(browser, has_element("stPlotlyChart", 3), what="the bar chart and two overlays")
    assert browser.find_elements("css selector", '[data-testid="stExpander"]')  # submit form
    screenshot(browser, "comparison.png")
