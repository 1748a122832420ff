"""``mdlma dashboard``: start the Streamlit dashboard (``dashboard/app.py``).

The server runs headless with XSRF protection on and binds to 127.0.0.1 by default
(the dashboard acts as the user: it submits and cancels their jobs, so it must not be
reachable by other users of the machine). Behind a proxy that keeps its URL prefix::

    mdlma dashboard --port 8600 --base-url-path /user/alice/dashboard

On a unix socket (what jupyter-server-proxy uses; the proxy strips its prefix)::

    mdlma dashboard --socket /tmp/alice-dash/sock

Streamlit's own server (Starlette since 1.5x) refuses unix sockets, so ``--socket``
serves the same app through its ASGI entry (``st.App``, module
:mod:`unified_framework.hub.dashboard_asgi`) with uvicorn. Any other Streamlit option
can follow ``--`` (TCP only)::

    mdlma dashboard --port 8600 -- --theme.base dark
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import BackendUnavailable, InputError
from ..shipped import shipped_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="start the browser dashboard (Streamlit)",
        description="Start the Streamlit dashboard: cluster resources, jobs, job composer, job viewer "
        "and segmentation comparison. Extra Streamlit options may follow '--'.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="TCP port (default: [dashboard] port of the config, 8501)",
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="TCP address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="serve on this unix socket instead of TCP, at the URL root (for jupyter-server-proxy)",
    )
    parser.add_argument(
        "--base-url-path",
        default="",
        metavar="PREFIX",
        help="URL prefix the dashboard is served under, e.g. /user/alice/dashboard",
    )
    parser.add_argument(
        "--print-command",
        action="store_true",
        help="print the streamlit command instead of running it",
    )
    parser.add_argument(
        "streamlit_options",
        nargs="*",
        metavar="-- STREAMLIT_OPTION",
        help="further 'streamlit run' options, after '--'",
    )
    parser.set_defaults(func=_dashboard)


def dashboard_app() -> Path:
    """Return the path of the dashboard's entry script in this installation.

    Found through :func:`unified_framework.shipped.shipped_dir` (the clone's
    ``dashboard/``, or the copy an installed wheel put below ``share/mdlma``).

    Raises
    ------
    BackendUnavailable
        When the installation has no ``dashboard/app.py``.
    """
    app = shipped_dir("dashboard") / "app.py"
    if not app.is_file():
        raise BackendUnavailable(
            f"dashboard app not found at {app}; reinstall the framework (scripts/install)"
        )
    return app


def build_command(args: argparse.Namespace, port: int) -> list[str]:
    """The command line that serves the dashboard for the parsed ``mdlma dashboard`` arguments."""
    prefix = args.base_url_path.strip()
    if prefix and (not prefix.startswith("/") or any(c in prefix for c in " ?#\\")):
        raise InputError(
            f"--base-url-path: expected a URL path such as /user/alice/dashboard, got {prefix!r}"
        )
    if args.address.startswith("unix://"):
        raise InputError(
            "--address: Streamlit's server cannot bind unix sockets; use --socket PATH"
        )
    if args.socket:
        if args.address != "127.0.0.1" or prefix or args.streamlit_options:
            raise InputError(
                "--socket: serves at the URL root on a unix socket; --address, --base-url-path "
                "and Streamlit options apply to TCP only"
            )
        dashboard_app()  # fail early with a clear message when the app is missing
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--uds",
            str(Path(args.socket).absolute()),
            "--no-access-log",
            "unified_framework.hub.dashboard_asgi:app",
        ]
    if not 0 < port < 65536:
        raise InputError(f"--port: expected 1..65535, got {port}")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(dashboard_app()),
        "--server.headless",
        "true",
        "--server.enableXsrfProtection",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--server.address",
        args.address,
        "--server.port",
        str(port),
        "--server.baseUrlPath",
        prefix.rstrip("/"),
        *args.streamlit_options,
    ]


def _dashboard(args: argparse.Namespace) -> int:
    from ..config import load_config

    port = args.port
    if port is None:
        configured = load_config()["dashboard"]["port"]
        try:
            port = int(configured) if not isinstance(configured, (bool, float)) else None
        except ValueError:
            port = None
        if port is None:
            raise InputError(f"[dashboard] port: expected an integer 1..65535, got {configured!r}")
    command = build_command(args, port)
    if args.print_command:
        print(" ".join(command))
        return 0
    if args.socket:
        # A stale socket from a killed server would make the bind fail.
        Path(args.socket).unlink(missing_ok=True)
        os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    os.execv(command[0], command)
    return 0  # not reached
