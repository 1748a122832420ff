"""JupyterHub configuration of the MDLMA unified framework.

Each user's server is a SLURM job of that user (batchspawner's SlurmSpawner, submitted
with ``runuser -u <user> -- sbatch``), running JupyterLab from a Lmod module
environment; the dashboard apps appear as launcher tiles (jupyter-server-proxy). See
docs/hub.md. ``scripts/hub start`` runs it with::

    jupyterhub -f hub_config/jupyterhub_config.py

(plus ``--JupyterHub.authenticator_class=unified_framework.hub.auth.DevAuthenticator`` for
``--dev``: only that command line option selects the development login).

Settings come from environment variables (``scripts/hub`` sets them):

MDLMA_HUB_STATE        folder for the database, cookie secret and logs (/var/lib/mdlma/hub);
                       the hub refuses one another user owns or may write (``scripts/hub check``)
MDLMA_HUB_PORT         public port on 127.0.0.1 (8000); the hub API uses +1, the proxy API +2
MDLMA_HUB_IP           address the public proxy binds (127.0.0.1)
MDLMA_HUB_CHP          configurable-http-proxy executable (default: found on PATH)
MDLMA_HUB_MODULEPATH   ':'-separated Lmod module paths offered as server environments
                       (default <MDLMA_PREFIX or the clone's .mdlma>/modulefiles)
MDLMA_HUB_PORT_RANGE   ports the single-user servers may use (50000-50999)
MDLMA_HUB_SERVER_IP    address the single-user servers listen on (127.0.0.1: jobs on this host)
MDLMA_HUB_ALLOWED_USERS comma-separated users allowed to log in (default: every local
                       user PAM accepts, except root)
"""

import os
import subprocess
import sys
from pathlib import Path

import batchspawner  # noqa: F401  (registers /hub/api/batchspawner, the jobs' port callback)

from unified_framework.hub import portcallback
from unified_framework.hub.spawner import MdlmaSlurmSpawner

# ... narrowed to {"port": n}: batchspawner's own handler lets a job set any spawner attribute.
portcallback.install()

c = get_config()  # noqa: F821 (provided by JupyterHub)

here = Path(__file__).resolve().parent
# The same checks as `scripts/hub start` (scripts/lib/state.sh), also when jupyterhub is
# run by hand: a state folder another user planted would hand them the cookie secret.
check = subprocess.run(
    [str(here.parent / "scripts" / "hub"), "check"], capture_output=True, text=True, check=False
)
if check.returncode != 0:
    sys.exit(check.stderr.strip() or f"scripts/hub check failed (exit {check.returncode})")
state = Path(check.stdout.strip())
state.mkdir(mode=0o700, parents=True, exist_ok=True)
port = int(os.environ.get("MDLMA_HUB_PORT", "8000"))
ip = os.environ.get("MDLMA_HUB_IP", "127.0.0.1")
prefix = Path(os.environ.get("MDLMA_PREFIX", here.parent / ".mdlma"))

# --------------------------------------------------------------- network and state
c.JupyterHub.bind_url = f"http://{ip}:{port}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{port + 1}"
# On a real cluster the jobs run elsewhere: use the hub host's address they can reach.
c.JupyterHub.hub_connect_url = os.environ.get(
    "MDLMA_HUB_CONNECT_URL", f"http://127.0.0.1:{port + 1}"
)
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 2}"
c.ConfigurableHTTPProxy.command = [os.environ.get("MDLMA_HUB_CHP", "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
# Servers are SLURM jobs: they end when the hub stops (scancel), not left orphaned.
c.JupyterHub.cleanup_servers = True

# --------------------------------------------------------------- who may log in
# `scripts/hub start --dev` overrides this on the command line (unified_framework.hub.auth).
c.JupyterHub.authenticator_class = "pam"
# Sessions would be opened in the hub's process, not in the job where the user works.
c.PAMAuthenticator.open_sessions = False
# Usernames end up in shell commands (runuser, sbatch) and paths: allow plain ones only.
c.Authenticator.username_pattern = r"^[a-z_][a-z0-9_-]{0,31}$"
c.Authenticator.blocked_users = {"root"}
allowed = {u.strip() for u in os.environ.get("MDLMA_HUB_ALLOWED_USERS", "").split(",") if u.strip()}
if allowed:
    c.Authenticator.allowed_users = allowed

# --------------------------------------------------------------- the spawner
c.JupyterHub.spawner_class = MdlmaSlurmSpawner
c.MdlmaSlurmSpawner.modulepaths = [
    p for p in os.environ.get("MDLMA_HUB_MODULEPATH", str(prefix / "modulefiles")).split(":") if p
]
c.MdlmaSlurmSpawner.port_range = os.environ.get("MDLMA_HUB_PORT_RANGE", "50000-50999")
c.MdlmaSlurmSpawner.server_ip = os.environ.get("MDLMA_HUB_SERVER_IP", "127.0.0.1")
c.MdlmaSlurmSpawner.options_form_template = str(here / "templates" / "options_form.html")
# The job script is slurm_templates/jupyter, rendered by unified_framework.hpc (see docs/hub.md).
# The hub runs as root; every SLURM command runs as the user (no sudo needed).
c.MdlmaSlurmSpawner.exec_prefix = "runuser -u {username} --"
# The job's PATH and friends come from the user's login environment and the module,
# not from the hub's (root's) environment.
c.Spawner.env_keep = ["LANG", "LC_ALL"]
c.MdlmaSlurmSpawner.batchspawner_singleuser_cmd = "python -m unified_framework.hub.singleuser"
c.Spawner.cmd = ["jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
# Queue waits count against start_timeout; JupyterLab's first start on a busy node
# against http_timeout. A job that dies is reported at once either way.
c.Spawner.start_timeout = int(os.environ.get("MDLMA_HUB_START_TIMEOUT", "600"))
c.Spawner.http_timeout = 180
c.MdlmaSlurmSpawner.startup_poll_interval = 1.0
