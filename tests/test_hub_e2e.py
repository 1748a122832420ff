"""End to end: the real hub (scripts/hub) on the real test SLURM cluster, PAM login of
real local users, JupyterLab in a SLURM job, the dashboard through jupyter-server-proxy
in headless chromium, a module kernel running code - and what must NOT work.

Needs root (PAM, useradd, runuser), the SLURM test cluster, configurable-http-proxy
from npm and Debian's chromium; ``scripts/hub start`` provides all but chromium.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import REPO, require

from unified_framework.hub.client import HubClient

pytestmark = [pytest.mark.hub, pytest.mark.slurm, pytest.mark.browser, pytest.mark.slow]

#: Next to the hub's default state folder (root's, under /var/lib/mdlma), never in /var/tmp.
HUB_STATE = subprocess.run(
    [REPO / "scripts" / "hub", "state-dir"], capture_output=True, text=True, check=True
)
STATE = Path(
    os.environ.get("MDLMA_HUB_TEST_STATE") or Path(HUB_STATE.stdout.strip()).parent / "hub-test"
)
PORT = int(os.environ.get("MDLMA_HUB_TEST_PORT", "8700"))
URL = f"http://127.0.0.1:{PORT}"
USER, OTHER = "mdlmatest", "mdlmaother"
MODULE = "mdlma/unified-framework/0.1.0"
BROKEN_MODULE = "mdlma-broken/0.0"
ARTIFACTS = REPO / "tests" / "artifacts"
PROFILE = {
    "partition": "debug",
    "runtime_minutes": "30",
    "cpus": "1",
    "memory_gb": "2",
    "module": MODULE,
}


def _hub_env(prefix: Path, broken_modules: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MDLMA_HUB_STATE": str(STATE),
        "MDLMA_HUB_PORT": str(PORT),
        "MDLMA_PREFIX": str(prefix),
        "MDLMA_HUB_MODULEPATH": f"{prefix / 'modulefiles'}:{broken_modules}",
        "MDLMA_HUB_TEST_USERS": f"{USER} {OTHER}",
    }


def _make_broken_module(root: Path) -> Path:
    """A module environment without the framework: its python is the system's."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python"
    if not python.is_symlink():
        python.symlink_to(shutil.which("python3", path="/usr/bin:/bin"))
    lua = root / "modulefiles" / "mdlma-broken" / "0.0.lua"
    lua.parent.mkdir(parents=True, exist_ok=True)
    lua.write_text(
        f'whatis("An environment without JupyterHub (tests failed spawns)")\n'
        f'prepend_path("PATH", "{bin_dir}")\n'
    )
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755)
    return root / "modulefiles"


def _jobs(user: str) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i|%u|%T|%j"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("|") for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def hub(prefix):
    require(os.geteuid() == 0, "the hub test needs root (PAM logins, useradd, runuser)")
    require(
        shutil.which("sbatch") is not None, "SLURM is not installed (scripts/slurm-cluster start)"
    )
    broken = _make_broken_module(STATE.parent / "hub-test-modules")
    env = _hub_env(prefix, broken)
    start = subprocess.run(
        [REPO / "scripts" / "hub", "start"], env=env, capture_output=True, text=True, timeout=900
    )
    assert start.returncode == 0, f"scripts/hub start failed:\n{start.stdout}\n{start.stderr}"
    passwords = {
        user: subprocess.run(
            [REPO / "scripts" / "hub", "password", user],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for user in (USER, OTHER)
    }
    # What the hub keeps is its own: the folder 0700, secrets 0600 (scripts/hub's umask).
    assert STATE.stat().st_mode & 0o777 == 0o700
    for secret in ("jupyterhub_cookie_secret", "jupyterhub.sqlite"):
        assert (STATE / secret).stat().st_mode & 0o077 == 0, secret
    yield passwords
    stop = subprocess.run(
        [REPO / "scripts" / "hub", "stop"], env=env, capture_output=True, text=True, timeout=300
    )
    assert stop.returncode == 0, stop.stderr
    assert not _jobs(USER) and not _jobs(OTHER), "scripts/hub stop left server jobs behind"


@pytest.fixture(scope="module")
def server(hub):
    """mdlmatest logged in, with a running server spawned from the options form."""
    client = HubClient(URL, USER)
    with pytest.raises(PermissionError):
        HubClient(URL, USER).login("not-the-password")
    client.login(hub[USER])
    form = client.options_form()
    for name in ("partition", "runtime_minutes", "cpus", "memory_gb", "gpus", "module"):
        assert f'name="{name}"' in form
    assert f'value="{MODULE}"' in form and 'value="debug"' in form
    result = client.spawn(PROFILE)
    assert result.ready, f"spawn failed: {result.events}"
    print(f"spawn-to-ready: {result.seconds:.1f} s")
    yield client
    client.stop()


def test_server_is_a_slurm_job_of_the_user_serving_jupyterlab(server):
    jobs = _jobs(USER)
    assert len(jobs) == 1, jobs
    job_id, user, state, name = jobs[0]
    assert (user, state, name) == (USER, "RUNNING", "jupyterhub")
    detail = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    assert "Partition=debug" in detail and "TimeLimit=00:30:00" in detail
    lab = server.session.get(f"{URL}/user/{USER}/lab", timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    # The server listens on loopback only (MdlmaSlurmSpawner.server_ip), not on every interface.
    pid = subprocess.run(
        ["pgrep", "-u", USER, "-f", "jupyterhub-singleuser"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    listening = [
        line.split()[3]
        for line in subprocess.run(
            ["ss", "-Hltnp"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if f"pid={pid}," in line
    ]
    assert listening and all(address.startswith("127.0.0.1:") for address in listening), listening


async def _execute(url: str, token: str, code: str) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    ws.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": USER,
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                },
            }
        )
    )
    output = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.read_message(), timeout=120))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            output.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            raise AssertionError("\n".join(message["content"]["traceback"]))
        elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            ws.close()
            return "".join(output)


def test_module_kernel_runs_code_inside_the_job(server):
    token = server.new_token()
    auth = {"Authorization": f"token {token}"}
    specs = requests.get(f"{URL}/user/{USER}/api/kernelspecs", headers=auth, timeout=60).json()[
        "kernelspecs"
    ]
    assert "mdlma-unified-framework" in specs
    kernel = requests.post(
        f"{URL}/user/{USER}/api/kernels",
        headers=auth,
        json={"name": "mdlma-unified-framework"},
        timeout=60,
    )
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    code = (
        "import getpass, os, numpy, unified_framework\n"
        "print(getpass.getuser(), os.environ['SLURM_JOB_ID'], os.environ['MDLMA_MODULE'],"
        " unified_framework.__version__, int(numpy.arange(10).sum()))"
    )
    try:
        out = asyncio.run(
            _execute(
                f"ws://127.0.0.1:{PORT}/user/{USER}/api/kernels/{kernel_id}/channels", token, code
            )
        )
    finally:
        requests.delete(f"{URL}/user/{USER}/api/kernels/{kernel_id}", headers=auth, timeout=60)
    job_id = _jobs(USER)[0][0]
    assert out.split() == [USER, job_id, "mdlma/unified-framework", "0.1.0", "45"]


def _chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require(
        Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists(),
        "Debian chromium/chromedriver are not installed (scripts/system-deps browser)",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _browser_login(driver, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{URL}/hub/login")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(password)
    driver.find_element(By.ID, "login_submit").click()


def test_dashboard_renders_through_the_proxy_in_chromium(server, hub, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _chromium(tmp_path)
    try:
        _browser_login(driver, USER, hub[USER])
        driver.get(f"{URL}/user/{USER}/lab")
        # The server-proxy tiles join the launcher after the kernels (fetched separately).
        # JupyterLab redraws the launcher as tiles arrive: a card found a moment ago may be stale.
        cards = WebDriverWait(
            driver, 120, ignored_exceptions=(StaleElementReferenceException,)
        ).until(
            lambda d: (lambda texts: texts if any("Job viewer" in t for t in texts) else None)(
                [c.text for c in d.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard")]
            )
        )
        for title in (
            "MDLMA dashboard",
            "Job composer",
            "Job viewer",
            "Python 3 (MDLMA unified framework 0.1.0)",
        ):
            assert any(title in text for text in cards), (title, cards)
        tile = next(
            c
            for c in driver.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard")
            if "Job viewer" in c.text
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", tile)
        driver.save_screenshot(str(ARTIFACTS / "hub_lab_launcher.png"))

        driver.get(f"{URL}/user/{USER}/mdlma-dashboard/")
        # Content only appears after the page's websocket (<prefix>/_stcore/stream) delivered the app.
        WebDriverWait(driver, 180).until(
            ec.presence_of_element_located(
                (
                    By.CSS_SELECTOR,
                    '[data-testid="stMainBlockContainer"] [data-testid="stHeading"], '
                    '[data-testid="stMainBlockContainer"] h1',
                )
            )
        )
        time.sleep(2)  # let the remaining elements of the page render for the screenshot
        body = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(ARTIFACTS / "hub_dashboard.png"))
        assert driver.current_url.startswith(f"{URL}/user/{USER}/mdlma-dashboard")
        assert "Connection error" not in body and "Is Streamlit still running" not in body
        assert "Job composer" in body  # the dashboard's navigation lists its pages

        # The "Job composer" tile: its own app instance, opened at the composer page.
        driver.get(f"{URL}/user/{USER}/mdlma-job-composer/composer")
        heading = (By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"] h1')
        WebDriverWait(driver, 180).until(ec.presence_of_element_located(heading))
        time.sleep(2)
        driver.save_screenshot(str(ARTIFACTS / "hub_job_composer.png"))
        title = driver.find_element(*heading).text  # found again: Streamlit may have redrawn it
        assert "composer" in title.lower(), title
    finally:
        driver.quit()


def _dashboard_session(server) -> requests.Session:
    page = server.session.get(f"{URL}/user/{USER}/mdlma-dashboard/", timeout=180)
    assert page.status_code == 200 and "<title>Streamlit</title>" in page.text
    # The frontend's first call, which also sets Streamlit's XSRF cookie.
    health = server.session.get(f"{URL}/user/{USER}/mdlma-dashboard/_stcore/health", timeout=60)
    assert health.status_code == 200 and health.text == "ok"
    return server.session


def test_streamlit_keeps_xsrf_protection_through_the_proxy(server):
    session = _dashboard_session(server)
    xsrf = session.cookies.get("_streamlit_xsrf")
    assert xsrf, "Streamlit set no XSRF cookie: XSRF protection is off"
    # An upload request without a body: Streamlit answers before reading one, so the
    # answer is its XSRF verdict (403) or, once that passed, its session check (400).
    upload = f"{URL}/user/{USER}/mdlma-dashboard/_stcore/upload_file/{uuid.uuid4()}/{uuid.uuid4()}"
    forged = session.put(upload, timeout=60)
    assert forged.status_code == 403 and "XSRF" in forged.text, (
        forged.status_code,
        forged.text[:200],
    )
    version, mask, token, stamp = xsrf.split("|")  # Tornado-style "2|mask|token|timestamp"
    tampered = session.put(
        upload,
        headers={"X-Xsrftoken": "|".join((version, mask, "0" * len(token), stamp))},
        timeout=60,
    )
    assert tampered.status_code == 403, tampered.text[:200]
    genuine = session.put(upload, headers={"X-Xsrftoken": xsrf}, timeout=60)
    assert genuine.status_code == 400 and "session" in genuine.text, (
        genuine.status_code,
        genuine.text[:200],
    )


def test_no_hub_login_no_access_to_the_apps(server):
    anonymous = requests.Session()
    for path in ("mdlma-dashboard/", "mdlma-dashboard/_stcore/health", "lab"):
        response = anonymous.get(f"{URL}/user/{USER}/{path}", timeout=60)
        assert response.url.startswith(f"{URL}/hub/login"), (path, response.url)
        assert (
            "_streamlit_xsrf" not in anonymous.cookies
            and "<title>Streamlit</title>" not in response.text
        )
    ws = anonymous.get(
        f"{URL}/user/{USER}/mdlma-dashboard/_stcore/stream",
        allow_redirects=False,
        timeout=60,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert ws.status_code != 101


def test_another_user_cannot_reach_the_apps(server, hub):
    _dashboard_session(server)  # make sure the dashboard process is running
    other = HubClient(URL, OTHER)
    other.login(hub[OTHER])
    response = other.session.get(f"{URL}/user/{USER}/mdlma-dashboard/", timeout=60)
    assert response.status_code == 403 and "<title>Streamlit</title>" not in response.text
    # On the node: the app listens on a unix socket in a folder private to its user.
    ps = subprocess.run(
        ["pgrep", "-u", USER, "-af", "uvicorn --uds"], capture_output=True, text=True
    )
    sockets = re.findall(r"--uds (\S+)", ps.stdout)
    assert sockets, ps.stdout
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
    as_other = subprocess.run(
        ["runuser", "-u", OTHER, "--", "python3", "-c", probe, sockets[0]],
        capture_output=True,
        text=True,
    )
    assert as_other.returncode != 0 and "PermissionError" in as_other.stderr
    as_owner = subprocess.run(
        ["runuser", "-u", USER, "--", "python3", "-c", probe, sockets[0]],
        capture_output=True,
        text=True,
    )
    assert as_owner.stdout.strip() == "connected", as_owner.stderr


def test_failed_job_is_reported_within_seconds(hub, tmp_path):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    client = HubClient(URL, OTHER)
    client.login(hub[OTHER])
    result = client.spawn({**PROFILE, "module": BROKEN_MODULE}, timeout=120)
    assert not result.ready
    assert result.events[-1].get("failed"), result.events
    assert "ended" in result.message and "No module named 'unified_framework'" in result.message, (
        result.message
    )
    assert result.seconds < 45, f"failure took {result.seconds:.0f} s to show"
    print(f"failed spawn reported after {result.seconds:.1f} s")
    assert not _jobs(OTHER)

    driver = _chromium(tmp_path)  # what the user sees on the spawn page
    try:
        _browser_login(driver, OTHER, hub[OTHER])
        driver.get(f"{URL}/hub/spawn/{OTHER}")
        Select(driver.find_element(By.NAME, "module")).select_by_value(BROKEN_MODULE)
        driver.find_element(
            By.CSS_SELECTOR, "#spawn_form input[type=submit], #spawn_form button[type=submit]"
        ).click()
        # The spawn page moves on to the pending page: a body read during that is gone.
        WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(
            lambda d: (
                "No module named 'unified_framework'" in d.find_element(By.TAG_NAME, "body").text
            )
        )
        driver.save_screenshot(str(ARTIFACTS / "hub_failed_spawn.png"))
    finally:
        driver.quit()
        client.stop()  # also waits out a spawn the browser left pending, so later tests start clean


def test_hostile_api_options_are_refused(hub):
    client = HubClient(URL, OTHER)
    client.login(hub[OTHER])
    form = client.options_form()
    xsrf = re.search(r"_xsrf=([^\"&]+)", form).group(1)
    refused = client.session.post(
        f"{URL}/hub/spawn/{OTHER}",
        data={**PROFILE, "cpus": "99", "_xsrf": xsrf},
        allow_redirects=False,
        timeout=60,
    )
    # Checked by hpc.validate_params against the debug partition's nodes, like every job.
    assert refused.status_code == 200 and "cpus: 99 exceeds the" in refused.text
    assert 'name="partition"' in refused.text  # the form again, for a corrected choice
    for partition in (
        "debug\n#SBATCH --uid=0",
        "debug\n",
    ):  # the second was once stripped and passed on raw
        response = client.api(
            "POST", f"users/{OTHER}/server", json={**PROFILE, "partition": partition}
        )
        assert response.status_code == 400, (response.status_code, response.text)
        assert response.json()["message"].startswith(
            "Invalid server options: partition: control character U+000A at position 5"
        ), response.text
        # The spawn page's progress stream says the same.
        message = client.follow_progress(time.monotonic(), 60).message
        assert "Invalid server options: partition" in message, message
    assert not _jobs(OTHER)


def test_port_callback_accepts_only_a_port(server):
    """The user's job holds the token batchspawner's callback accepts; it must not be
    able to set anything but the port (e.g. the command prefix the root hub runs)."""
    pgrep = subprocess.run(
        ["pgrep", "-u", USER, "-f", "jupyterhub-singleuser"], capture_output=True, text=True
    )
    pid = pgrep.stdout.split()[0]
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    api, token = environ["JUPYTERHUB_API_URL"], environ["JUPYTERHUB_API_TOKEN"]
    auth = {"Authorization": f"token {token}"}
    for body in (
        {"exec_prefix": "touch /tmp/mdlma-pwned #"},
        {"port": 50100, "ip": "10.0.0.1"},
        {"port": 80},
        {"port": "50100"},
    ):
        response = requests.post(f"{api}/batchspawner", headers=auth, json=body, timeout=30)
        assert response.status_code == 400, (body, response.status_code)
    assert server.session.get(f"{URL}/user/{USER}/api/status", timeout=60).status_code == 200
    assert not Path("/tmp/mdlma-pwned").exists()


def test_stopping_the_server_removes_the_job(server):
    assert _jobs(USER)
    server.stop()
    deadline = time.monotonic() + 60
    while _jobs(USER) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _jobs(USER)
