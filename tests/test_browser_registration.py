"""The Registration page in Debian's headless chromium (the running dashboard under a URL prefix): a screenshot.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the result folder
is made beforehand with the page's own helper (a 32³ phantom pair, convexAdam on the CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture of the dashboard fixture
from test_browser_dashboard import browser, dashboard, has_text, idle, screenshot, wait_until  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def test_registration_page_shows_slices_jacobian_and_quality(dashboard, browser):  # noqa: F811
    sys.path.insert(0, str(REPO / "dashboard"))
    from components.registration import make_sample_registration

    base, home = dashboard
    make_sample_registration(home, (32, 32, 32), seed=0, multimodal=False)
    browser.get(f"{base}/registration")
    wait_until(browser, has_text("Quality before and after"), what="the registration page")
    wait_until(browser, has_text("Jacobian determinant"), what="the Jacobian map")
    wait_until(browser, idle, what="the page to settle")
    # the quality table is drawn on a canvas (its text is not in the DOM): check it is there
    assert browser.find_elements("css selector", '[data-testid="stDataFrame"]')
    assert len(browser.find_elements("css selector", '[data-testid="stPlotlyChart"]')) == 5
    screenshot(browser, "registration.png")
