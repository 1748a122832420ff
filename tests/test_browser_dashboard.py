"""The running dashboard in Debian's headless chromium, behind a URL prefix, on the real test cluster.

``mdlma dashboard --base-url-path /user/alice/dashboard`` is started as a subprocess;
Selenium drives ``/usr/bin/chromium`` through ``/usr/bin/chromedriver`` (both from
Debian; nothing downloads a browser). The test composes and submits a job, watches it
finish in the viewer, opens its results, and saves screenshots under
``tests/artifacts/`` (kept by CI as files, not committed). A second test searches the
catalogue, looks at a dataset and opens it in the job composer.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import require
from conftest_slurm import slurm_cluster  # noqa: F401 - fixture
from dashboard_result_job import RESULT_SCRIPT

from unified_framework import hpc
from unified_framework.catalogue import SQLiteCatalogue, extract_dataset
from unified_framework.data import make_implant_phantom
from unified_framework.io import write_volume

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
PREFIX = "/user/alice/dashboard"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [pytest.mark.browser, pytest.mark.slurm]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, slurm_cluster):  # noqa: F811
    """A running ``mdlma dashboard`` under PREFIX; yields (base URL, MDLMA_HOME)."""
    folder = tmp_path_factory.mktemp("browser")
    home = folder / "home"
    home.mkdir()
    env = {
        **os.environ,
        "MDLMA_HOME": str(home),
        "MDLMA_CONFIG": str(folder / "config.toml"),
        "MDLMA_CATALOGUE": str(home / "catalogue.sqlite"),
    }
    port = free_port()
    log = (folder / "dashboard.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unified_framework",
            "dashboard",
            "--port",
            str(port),
            "--base-url-path",
            PREFIX,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    base = f"http://127.0.0.1:{port}{PREFIX}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the dashboard did not start:\n{(folder / 'dashboard.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base, home
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: Streamlit's shutdown can lag
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        "Debian's chromium and chromium-driver are not installed",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1500,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager has nothing to download.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_until(driver, condition, timeout: float = 60, what: str = "the page"):
    """Wait for ``condition``; on a timeout keep a screenshot of what the page showed instead."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit redraws elements on every rerun: an element found a moment ago may be gone.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=ignored).until(
            condition, f"timed out waiting for {what}"
        )
    except TimeoutException:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(
            str(ARTIFACTS / f"failed-{re.sub(r'[^a-z0-9]+', '-', what.lower())}.png")
        )
        raise


def page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def has_text(text: str):
    return lambda driver: text in page_text(driver)


def has_element(test_id: str, count: int = 1):
    """At least ``count`` elements with this ``data-testid`` (tables and charts render after
    the script run ends, so an idle page may not show them yet)."""
    return lambda driver: (
        len(driver.find_elements("css selector", f'[data-testid="{test_id}"]')) >= count
    )


def idle(driver) -> bool:
    """No script run in progress (Streamlit shows a running indicator while rerunning)."""
    return not driver.find_elements("css selector", '[data-testid="stStatusWidget"]')


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000, f"{path} looks empty"
    return path


def set_text(driver, label: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = wait_until(
        driver,
        lambda d: d.find_element("css selector", f'input[aria-label="{label}"]'),
        what=f"the field {label}",
    )
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value, Keys.ENTER)
    wait_until(
        driver,
        lambda d: (
            d.find_element("css selector", f'input[aria-label="{label}"]').get_attribute("value")
            == value
        ),
        what=f"{label} = {value}",
    )


def choose(driver, label: str, option: str) -> None:
    """Pick the entry of the selectbox ``label`` that contains ``option`` (typed to filter it)."""
    from selenium.webdriver.common.keys import Keys

    box = f"//div[@data-testid='stSelectbox'][.//label[normalize-space(.)='{label}']]"
    click(driver, f"{box}//input", f"the {label} box")
    driver.find_element("xpath", f"{box}//input").send_keys(option, Keys.ENTER)
    # The chosen entry shows as the box's text or, while it has the focus, as its input's value.
    shown = "return arguments[0].innerText + ' ' + arguments[1].value;"
    wait_until(
        driver,
        lambda d: (
            option
            in d.execute_script(
                shown, d.find_element("xpath", box), d.find_element("xpath", f"{box}//input")
            )
        ),
        what=f"{label}: {option}",
    )


def click(driver, xpath: str, what: str) -> None:
    element = wait_until(driver, lambda d: d.find_element("xpath", xpath), what=what)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    wait_until(
        driver, lambda d: d.find_element("xpath", xpath).is_enabled(), what=f"{what} enabled"
    )
    d_element = driver.find_element("xpath", xpath)
    d_element.click()


def test_compose_submit_watch_and_view_results(dashboard, browser):
    base, home = dashboard
    (home / "sweep.py").write_text(RESULT_SCRIPT)

    # 1. Compose: the form is generated from python-script's form.yml.
    browser.get(f"{base}/composer?template=python-script")
    wait_until(browser, has_text("Batch script"), what="the composer")
    assert browser.current_url.startswith(f"{base}/composer")
    set_text(browser, "script", "sweep.py")
    set_text(browser, "time", "00:05:00")
    wait_until(browser, has_text("#SBATCH --time=00:05:00"), what="the script preview")
    screenshot(browser, "01-composer.png")

    # 2. Submit, then follow the link to the viewer (relative, so it keeps the prefix).
    click(browser, "//button[normalize-space(.)='Submit']", "the Submit button")
    wait_until(browser, has_text("Submitted job"), what="the submission")
    link = browser.find_element("xpath", "//a[contains(., 'in the viewer')]")
    job_id = re.search(r"Watch job (\d+)", link.text).group(1)
    try:
        screenshot(browser, "02-submitted.png")
        link.click()
        wait_until(
            browser,
            lambda d: "/viewer" in d.current_url and f"job={job_id}" in d.current_url,
            what="the viewer URL",
        )
        assert browser.current_url.startswith(f"{base}/viewer")

        # 3. Watch it: state, log tail and curves refresh on their own while it waits and runs
        #    (on a shared test cluster it may queue behind other jobs for a while).
        wait_until(
            browser,
            lambda d: "RUNNING" in page_text(d) or "COMPLETED" in page_text(d),
            timeout=600,
            what=f"job {job_id} to start",
        )
        wait_until(browser, idle, what="the page to settle")
        screenshot(browser, "03-viewer-running.png")
        wait_until(browser, has_text("COMPLETED"), timeout=300, what=f"job {job_id} to finish")
        wait_until(
            browser, has_text("results written; best loss"), timeout=60, what="the final log line"
        )
        wait_until(browser, idle, what="the page to settle")
        screenshot(browser, "04-viewer-log.png")

        # 4. The results: training-style curves, then slices with overlay, uncertainty and scores.
        click(browser, "//*[@role='tab' and normalize-space(.)='Metrics']", "the Metrics tab")
        wait_until(
            browser,
            lambda d: len(d.find_elements("css selector", ".js-plotly-plot")) >= 3,
            what="the plots",
        )
        time.sleep(1)
        screenshot(browser, "05-viewer-metrics.png")
        click(browser, "//*[@role='tab' and normalize-space(.)='Volumes']", "the Volumes tab")
        wait_until(
            browser, has_text("Scores against ground truth"), timeout=90, what="the volume view"
        )
        wait_until(
            browser,
            lambda d: d.find_elements("css selector", ".js-plotly-plot image"),
            what="the slice image",
        )
        wait_until(browser, idle, what="the page to settle")
        classes = browser.find_element("xpath", "//*[normalize-space(text())='Classes']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", classes)
        time.sleep(1)
        screenshot(browser, "06-viewer-volumes.png")
        assert "residual implant" in page_text(browser)  # class names from dataset.json
        scores = browser.find_element(
            "xpath", "//*[contains(text(), 'Scores against ground truth')]"
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", scores)
        time.sleep(1)
        screenshot(browser, "07-viewer-scores.png")
    finally:
        with contextlib.suppress(hpc.SlurmError):  # free the test cluster after a failure
            if any(not job.finished for job in hpc.status([job_id])):
                hpc.cancel([job_id])

    # 5. The job in the list and the cluster overview.
    browser.get(f"{base}/jobs")
    wait_until(browser, has_text("jobs shown"), what="the jobs page")
    screenshot(browser, "08-jobs.png")
    browser.get(f"{base}/")  # Resources is the start page
    wait_until(browser, has_text("Free CPUs"), what="the resources page")
    screenshot(browser, "09-resources.png")


def test_catalogue_search_detail_and_use_in_composer(dashboard, browser):
    base, home = dashboard
    catalogue = SQLiteCatalogue(home / "catalogue.sqlite")
    for week in (4, 12):
        image, _ = make_implant_phantom((24, 64, 64), seed=week)
        path = write_volume(home / f"screw_week{week}.zarr", image, spacing=(0.65,) * 3)
        catalogue.ingest(
            extract_dataset(
                path,
                owner="Alice Doe",
                owner_group="p05",
                contact_email="alice@example.org",
                description=f"Mg-Gd screw in rat tibia, week {week}",
                keywords=["implant"],
            )
        )

    browser.get(f"{base}/catalogue")
    wait_until(browser, has_text("2 datasets match"), what="the catalogue")
    set_text(browser, "Search text", '"week 12"')
    click(browser, "//button[normalize-space(.)='Search']", "the Search button")
    wait_until(browser, has_text("1 dataset matches"), what="the search result")
    wait_until(
        browser,
        lambda d: d.find_elements("css selector", '[data-testid="stImage"] img'),
        what="the thumbnail",
    )
    wait_until(browser, idle, what="the page to settle")
    assert "screw_week12.zarr" in page_text(browser) and "screw_week4.zarr" not in page_text(
        browser
    )
    screenshot(browser, "10-catalogue.png")

    # Of the templates taking a dataset, 'score': the scan fills its first input, 'pred'.
    choose(browser, "Template", "(score)")
    wait_until(browser, idle, what="the page to settle")
    click(
        browser, "//button[normalize-space(.)='Open the composer']", "the Open the composer button"
    )
    wait_until(browser, lambda d: "/composer" in d.current_url, what="the composer URL")
    wait_until(browser, has_text("from the catalogue"), what="the pre-filled form")
    wait_until(
        browser,
        lambda d: (
            d.find_element("css selector", 'input[aria-label="pred"]').get_attribute("value")
            == str(home / "screw_week12.zarr")
        ),
        what="pred filled with the dataset",
    )
    set_text(browser, "gt", str(home / "screw_week4.zarr"))
    wait_until(
        browser,
        has_text(f"mdlma score {home / 'screw_week12.zarr'} {home / 'screw_week4.zarr'}"),
        what="the paths in the script preview",
    )
    screenshot(browser, "11-composer-from-catalogue.png")
