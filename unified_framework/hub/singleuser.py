"""Start the single-user server inside the SLURM job, on a port from the allowed range.

Run by the job script of :class:`~unified_framework.hub.spawner.MdlmaSlurmSpawner`::

    python -m unified_framework.hub.singleuser jupyterhub-singleuser [ARGS...]

It does what ``batchspawner-singleuser`` does - pick a free port on this node, tell the
hub through batchspawner's ``POST /hub/api/batchspawner`` and put the port into
``JUPYTERHUB_SERVICE_URL`` - but takes the port from ``MDLMA_HUB_PORT_RANGE``
(``first-last``, so a site can open just that range between hub and nodes) and stops
with a clear message when the hub refuses the port instead of starting a server the
hub never hears of.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlparse, urlunparse

from ..errors import InputError

DEFAULT_PORT_RANGE = "50000-50999"


def parse_port_range(text: str) -> range:
    """``"first-last"`` as a range of ports (both ends included)."""
    try:
        first, last = (int(part) for part in text.strip().split("-"))
    except ValueError:
        raise InputError(
            f"MDLMA_HUB_PORT_RANGE: expected 'first-last' such as 50000-50999, got {text!r}"
        ) from None
    if not 1024 <= first <= last <= 65535:
        raise InputError(
            f"MDLMA_HUB_PORT_RANGE: expected 1024 <= first <= last <= 65535, got {text!r}"
        )
    return range(first, last + 1)


def pick_port(ports: range, host: str = "") -> int:
    """A port from ``ports`` that nothing listens on right now, tried in random order.

    Raises
    ------
    RuntimeError
        When every port in the range is taken.
    """
    candidates = list(ports)
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on {socket.gethostname()}")


def report_port(port: int, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
    """Tell the hub which port the server will use (batchspawner's port callback)."""
    env = os.environ if env is None else env
    url = env["JUPYTERHUB_API_URL"].rstrip("/") + "/batchspawner"
    request = urllib.request.Request(
        url,
        data=json.dumps({"port": port}).encode(),
        headers={
            "Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.URLError as exc:
        raise RuntimeError(f"the hub at {url} did not accept the server's port: {exc}") from exc


def service_url_with_port(service_url: str, port: int) -> str:
    """``JUPYTERHUB_SERVICE_URL`` with its port replaced."""
    url = urlparse(service_url)
    return urlunparse(url._replace(netloc=f"{url.hostname}:{port}"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit(
            "usage: python -m unified_framework.hub.singleuser jupyterhub-singleuser [ARGS...]"
        )
    try:
        port = pick_port(
            parse_port_range(os.environ.get("MDLMA_HUB_PORT_RANGE", DEFAULT_PORT_RANGE))
        )
        report_port(port)
    except (InputError, RuntimeError, KeyError) as exc:
        sys.exit(f"mdlma hub: cannot start the server: {exc}")
    os.environ["JUPYTERHUB_SERVICE_URL"] = service_url_with_port(
        os.environ["JUPYTERHUB_SERVICE_URL"], port
    )
    print(f"[mdlma-hub] server port {port}", flush=True)
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
