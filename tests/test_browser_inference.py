"""The Inference page in Debian's headless chromium: run the sample here, see the overlay and a running service.

Uses the dashboard and browser fixtures of ``test_browser_dashboard``; the sample model
and image are made beforehand with the page's own helper, and a predict service of that
model is started on loopback with the library's helper (what the page's Start button calls).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

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

from unified_framework.inference.service import start_service, stop_service, wait_for_service

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def test_inference_page_runs_the_sample_and_lists_the_service(dashboard, browser):  # noqa: F811
    sys.path.insert(0, str(REPO / "dashboard"))
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
