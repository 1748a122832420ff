"""jupyter-server-proxy entries: the dashboard apps as JupyterLab launcher tiles.

Registered in ``pyproject.toml`` under ``[project.entry-points."jupyter_serverproxy_servers"]``,
so every JupyterLab started from the module's environment (by the hub or by hand)
shows the tiles. Each tile starts the dashboard on first use:

* on a **unix socket** in a fresh private (0700) temporary folder, so other users on
  the node cannot reach the app - it acts as the user (it submits and cancels their
  jobs). Streamlit's own server refuses unix sockets since it moved to Starlette, so
  uvicorn serves the dashboard's ASGI app (:mod:`unified_framework.hub.dashboard_asgi`);
* with the proxy prefix stripped (``absolute_url: False``): the app's routes are at
  its root and Streamlit's frontend derives the prefix (``/user/<name>/<entry>/``)
  from the page URL for its requests and its websocket (``_stcore/stream``);
* with Streamlit's **XSRF protection on** (its default): jupyter-server-proxy forwards
  cookies, the ``Origin``/``Host`` headers and every websocket subprotocol (Streamlit
  passes its XSRF token as one), and leaves the XSRF check of proxied requests to the
  app, so Streamlit's same-origin and token checks work unchanged. Requests reach the
  proxy only after the single-user server has authenticated them with the hub, so
  unauthenticated ones never reach Streamlit.
"""

from __future__ import annotations

import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent / "icons"

#: Seconds a dashboard may take to answer on its socket after starting (a loaded node
#: importing Streamlit, pandas and plotly).
STARTUP_TIMEOUT = 120.0


def dashboard_server(name: str, title: str, icon: str, page: str = "") -> dict:
    """The jupyter-server-proxy configuration of one dashboard tile.

    Parameters
    ----------
    name : str
        Entry name, which is also the URL path below the user's server.
    title : str
        Launcher tile title.
    icon : str
        SVG file name in ``unified_framework/hub/icons``.
    page : str
        Dashboard page (its ``url_path``) the tile opens; "" for the start page.
    """
    return {
        "command": [
            sys.executable,
            "-m",
            "uvicorn",
            "--uds",
            "{unix_socket}",
            "--no-access-log",
            "unified_framework.hub.dashboard_asgi:app",
        ],
        "environment": {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"},
        "unix_socket": True,
        "absolute_url": False,
        "timeout": STARTUP_TIMEOUT,
        "launcher_entry": {
            "title": title,
            "icon_path": str(ICONS / icon),
            "path_info": f"{name}/{page}",
            # JupyterLab's launcher draws an icon URL only for kernel categories.
            "category": "Notebook",
        },
    }


def setup_dashboard() -> dict:
    """Launcher tile of the dashboard's start page (cluster resources, jobs)."""
    return dashboard_server("mdlma-dashboard", "MDLMA dashboard", "dashboard.svg")


def setup_job_composer() -> dict:
    """Launcher tile of the job composer (write and submit a SLURM job)."""
    return dashboard_server(
        "mdlma-job-composer", "Job composer", "job-composer.svg", page="composer"
    )


def setup_job_viewer() -> dict:
    """Launcher tile of the job viewer (logs and resource use of a job)."""
    return dashboard_server("mdlma-job-viewer", "Job viewer", "job-viewer.svg", page="viewer")
