"""A small client for the hub as a browser would use it: log in with the login form,
spawn with the options form, follow the spawn's progress, stop the server.

Used by the end-to-end tests and ``benchmarks/hub_spawn.py``. Requests go through the
public proxy exactly like a user's; cookie-authenticated API calls carry JupyterHub's
``_xsrf`` token as ``X-XSRFToken``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import requests

# JupyterHub 4.1 puts the token in a hidden input (login) or the form's action (spawn).
_XSRF_INPUT = re.compile(r'name="_xsrf"\s+value="([^"]+)"|[?&]_xsrf=([^"&]+)')


@dataclass
class SpawnResult:
    """How a spawn ended: ``ready`` or not, the progress ``events`` and the ``seconds`` it took."""

    ready: bool
    events: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def message(self) -> str:
        return self.events[-1].get("message", "") if self.events else ""


class HubClient:
    """One logged-in browser session of ``user`` on the hub at ``url``."""

    def __init__(self, url: str, user: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self.session = requests.Session()

    def _xsrf_from(self, html: str) -> str:
        match = _XSRF_INPUT.search(html)
        if not match:
            raise RuntimeError("the hub page has no _xsrf field")
        return match.group(1) or match.group(2)

    def login(self, password: str) -> requests.Response:
        """Submit the login form; raises when the hub does not accept the password."""
        page = self.session.get(f"{self.url}/hub/login", timeout=self.timeout)
        page.raise_for_status()
        response = self.session.post(
            f"{self.url}/hub/login?next=",
            data={"username": self.user, "password": password, "_xsrf": self._xsrf_from(page.text)},
            allow_redirects=False,
            timeout=self.timeout,
        )
        if response.status_code != 302:
            raise PermissionError(f"login of {self.user} failed (HTTP {response.status_code})")
        # The XSRF token is bound to the session: fetch a page to get the logged-in one.
        self.session.get(f"{self.url}/hub/home", timeout=self.timeout).raise_for_status()
        return response

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A cookie-authenticated call to ``/hub/api/<path>``."""
        headers = {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}
        return self.session.request(
            method,
            f"{self.url}/hub/api/{path}",
            headers=headers,
            timeout=kwargs.pop("timeout", self.timeout),
            **kwargs,
        )

    def options_form(self) -> str:
        """The options form's HTML (the spawn page)."""
        page = self.session.get(f"{self.url}/hub/spawn/{self.user}", timeout=self.timeout)
        page.raise_for_status()
        return page.text

    def spawn(self, options: dict[str, str], timeout: float = 600.0) -> SpawnResult:
        """Submit the options form and follow the progress events until ready or failed."""
        start = time.monotonic()
        form = self.options_form()
        response = self.session.post(
            f"{self.url}/hub/spawn/{self.user}",
            data={**options, "_xsrf": self._xsrf_from(form)},
            allow_redirects=False,
            timeout=self.timeout,
        )
        if response.status_code not in (302, 303):
            raise RuntimeError(
                f"the spawn form was refused (HTTP {response.status_code}): {response.text[-500:]}"
            )
        return self.follow_progress(start, timeout)

    def follow_progress(self, start: float, timeout: float) -> SpawnResult:
        events: list[dict] = []
        with self.api(
            "GET", f"users/{self.user}/server/progress", stream=True, timeout=timeout
        ) as stream:
            stream.raise_for_status()
            for line in stream.iter_lines(decode_unicode=True):  # the hub sends keep-alive lines
                if time.monotonic() - start > timeout:
                    break
                if isinstance(line, bytes):  # decode_unicode gives text; the stubs say bytes
                    line = line.decode("utf-8", "replace")
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
        ready = bool(events and events[-1].get("ready"))
        return SpawnResult(ready=ready, events=events, seconds=time.monotonic() - start)

    def stop(self, timeout: float = 120.0) -> None:
        """Stop the user's server and wait until the hub reports it stopped."""
        response = self.api("DELETE", f"users/{self.user}/server")
        if response.status_code not in (202, 204, 400):  # 400: not running
            raise RuntimeError(
                f"stopping the server failed (HTTP {response.status_code}): {response.text}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"users/{self.user}").json()
            if not model.get("servers"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.user}'s server did not stop within {timeout:.0f} s")

    def new_token(self, note: str = "mdlma hub client") -> str:
        """An API token of the user (e.g. for the single-user server's REST API)."""
        response = self.api(
            "POST", f"users/{self.user}/tokens", json={"note": note, "expires_in": 3600}
        )
        response.raise_for_status()
        return response.json()["token"]
