"""``mdlma dashboard`` starts a real server: TCP under a URL prefix, or a unix socket, XSRF on."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PREFIX = "/user/x/dashboard"


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (what jupyter-server-proxy does)."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.socket_path)


def get(connect, path: str) -> http.client.HTTPResponse:
    connection = connect()
    connection.request("GET", path)
    return connection.getresponse()


def serve(args: list[str], tmp_path: Path, connect, health: str, timeout: float = 90):
    env = {**os.environ, "MDLMA_HOME": str(tmp_path / "home")}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "unified_framework", "dashboard", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = get(connect, health)
            if answer.status == 200 and answer.read().strip() == b"ok":
                return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"dashboard did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)


def test_tcp_under_a_url_prefix_with_xsrf(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connect = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # noqa: E731
    server = serve(
        ["--port", str(port), "--base-url-path", PREFIX],
        tmp_path,
        connect,
        f"{PREFIX}/_stcore/health",
    )
    try:
        assert get(connect, "/_stcore/health").status == 404  # nothing outside the prefix
        page = get(connect, f"{PREFIX}/")
        assert page.status == 200 and b'<div id="root">' in page.read()
        # XSRF protection on: the health answer hands out the token cookie the frontend echoes
        assert "_streamlit_xsrf=" in (
            get(connect, f"{PREFIX}/_stcore/health").getheader("Set-Cookie") or ""
        )
        assert (
            get(connect, f"{PREFIX}/viewer").status == 200
        )  # pages are client-side routes under the prefix
    finally:
        stop(server)


def test_unix_socket_at_the_root(tmp_path):
    path = str(tmp_path / "dash.sock")
    connect = lambda: UnixConnection(path)  # noqa: E731
    server = serve(["--socket", path], tmp_path, connect, "/_stcore/health")
    try:
        page = get(connect, "/")
        assert page.status == 200 and b'<div id="root">' in page.read()
        assert "_streamlit_xsrf=" in (get(connect, "/_stcore/health").getheader("Set-Cookie") or "")
    finally:
        stop(server)


def test_bad_options_are_one_line_errors(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "unified_framework", "dashboard", "--address", "unix:///tmp/s"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.strip().startswith("mdlma: error: --address")
    assert len(done.stderr.strip().splitlines()) == 1
