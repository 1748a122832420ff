"""The hub end of the jobs' port callback (``POST /hub/api/batchspawner``), narrowed.

batchspawner 1.3.0's handler copies *every* key of the posted JSON onto the spawner
(``setattr``), and the token it accepts is the one the user's own job holds. A user
could post ``{"exec_prefix": "..."}`` and have the hub - running as root - execute it
at the next ``squeue`` poll. :func:`install` swaps that handler for one that accepts
exactly ``{"port": <int in the spawner's port range>}`` and nothing else.
"""

from __future__ import annotations

import json

from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web

ROUTE = r"/api/batchspawner"


class PortCallbackHandler(APIHandler):
    """Record the port a user's server job listens on."""

    @web.authenticated
    def post(self) -> None:
        token = self.get_auth_token()
        spawner = next(
            (s for s in self.current_user.spawners.values() if s.api_token == token), None
        )
        if spawner is None:
            raise web.HTTPError(403, "only a server's own token may report its port")
        data = self.get_json_body()
        if not isinstance(data, dict) or set(data) != {"port"}:
            raise web.HTTPError(400, 'expected exactly {"port": <number>}')
        port = data["port"]
        low, high = (int(part) for part in getattr(spawner, "port_range", "1024-65535").split("-"))
        if not isinstance(port, int) or isinstance(port, bool) or not low <= port <= high:
            raise web.HTTPError(400, f"port: expected a whole number from {low} to {high}")
        spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": f"port {port} recorded"}))


def install() -> None:
    """Replace batchspawner's handler (registered by ``import batchspawner``) with ours."""
    handlers = apihandlers.default_handlers
    handlers[:] = [entry for entry in handlers if entry[0] != ROUTE]
    handlers.append((ROUTE, PortCallbackHandler))
