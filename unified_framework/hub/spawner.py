"""``MdlmaSlurmSpawner``: batchspawner's SlurmSpawner with an options form filled from
the cluster, validated options, progress messages and fast, explained failures.

The job script is the ``jupyter`` job template (``slurm_templates/jupyter``), rendered
by the SLURM layer (:func:`unified_framework.hpc.render`) from the parameters
:func:`~.options.validate_options` checked with the validator of every job: the
user's choices plus the hub's own settings as locked parameters (the server command
batchspawner puts in ``cmd``, the module paths, Lmod's init script). What is about the
submission rather than the script - working directory, log file, the environment
variables passed on - goes on sbatch's command line (``{sbatch_args}`` in
``batch_submit_cmd``), as the SLURM layer submits every job.

batchspawner 1.3.0 waits for the server's port without looking at the job again, so a
job that dies after it started leaves the user staring at a spinner until
``start_timeout``. Here every wait also polls the job; when it is gone the spawn fails
at once with the tail of the job's log (read as the user, so a symlinked log cannot
show the user a file they may not read).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import shlex
import socket
import time
from pathlib import Path
from typing import Any

import jinja2
from batchspawner import JobStatus, SlurmSpawner
from tornado import web
from traitlets import Bool, Float, Integer, List, Unicode, default

from ..errors import BackendUnavailable, InputError
from ..hpc import cluster_limits, render, slurm
from ..hpc.jobs import script_context
from ..hpc.slurm import escape_filename_pattern
from .cluster import list_modules
from .options import FORM_FIELDS, SpawnChoices, jupyter_template, validate_options


class SpawnFailed(RuntimeError):
    """A spawn that cannot succeed; ``jupyterhub_message`` is what the user sees."""

    def __init__(self, message: str, html_message: str = "") -> None:
        super().__init__(message)
        self.jupyterhub_message = message
        self.jupyterhub_html_message = html_message


class InvalidOptions(web.HTTPError):
    """Spawn options that fail validation: the REST API answers 400 with the message.

    Raised by :meth:`MdlmaSlurmSpawner.start`, which JupyterHub awaits inside the
    ``POST /hub/api/users/<name>/server`` request (a plain exception there becomes a
    500 "error"); the spawn page shows ``jupyterhub_message``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(400, "%s", message)  # "%s": a '%' in a user's value is no format
        self.jupyterhub_message = message


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address or ``localhost``) only reaches this host.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class MdlmaSlurmSpawner(SlurmSpawner):
    """Start the single-user server as a SLURM job of the user, inside a module environment."""

    modulepaths = List(
        Unicode(),
        help="Lmod module paths whose modules are offered as server environments.",
    ).tag(config=True)

    lmod_init = Unicode(
        "/usr/share/lmod/lmod/init/bash",
        help="Lmod's bash initialisation script on the compute nodes.",
    ).tag(config=True)

    job_name = Unicode("jupyterhub", help="Name of the server jobs in the queue.").tag(config=True)

    login_environment = Bool(
        True,
        help="Start the job in the user's login environment (sbatch --get-user-env=L; see docs/hub.md).",
    ).tag(config=True)

    batch_submit_cmd = Unicode(
        "sbatch --parsable {sbatch_args}",
        help="How the job script (on standard input) is submitted; {sbatch_args} are the working "
        "directory, log file and environment options, quoted for the shell.",
    ).tag(config=True)

    port_range = Unicode(
        "50000-50999",
        help="Ports (first-last) the single-user server may listen on; open these between hub and nodes.",
    ).tag(config=True)

    options_form_template = Unicode(help="Jinja2 template of the options form.").tag(config=True)

    job_log = Unicode(
        "{homedir}/.mdlma-jupyterhub-%j.log",
        help="Output file of the job (sbatch --output; %j is the job id). The hub reads its tail "
        "as the user when a job dies.",
    ).tag(config=True)

    log_tail_lines = Integer(20, help="Lines of the job log shown when a job dies.").tag(
        config=True
    )

    server_ip = Unicode(
        "127.0.0.1",
        help="Address the single-user server listens on. Loopback (the default) when the jobs run "
        "on the hub's host; on a cluster the nodes' address on the network they share with the hub "
        "(0.0.0.0: every interface of the node).",
    ).tag(config=True)

    choices_ttl = Float(
        30.0, help="Seconds a reading of sinfo and the module paths is reused."
    ).tag(config=True)

    # "state reason host": the reason (Resources, Priority, ...) feeds the progress messages.
    batch_query_cmd = Unicode("squeue -h -j {job_id} -o '%T %r %B'").tag(config=True)
    final_state_cmd = Unicode(
        "sacct -n -X -P -j {job_id} -o State,ExitCode",
        help="How an ended job's state and exit code are read.",
    ).tag(config=True)

    _choices_cache: tuple[float, SpawnChoices] | None = None
    _job_params: dict[str, Any] | None = None

    # ------------------------------------------------------------------ choices
    def cluster_choices(self) -> SpawnChoices:
        """Partitions and module environments, read at most every ``choices_ttl`` seconds.

        Raises
        ------
        SpawnFailed
            When the cluster cannot be asked (``sinfo`` fails).
        """
        cache = MdlmaSlurmSpawner._choices_cache
        if cache is not None and time.monotonic() - cache[0] < self.choices_ttl:
            return cache[1]
        try:
            limits = cluster_limits()
        except (BackendUnavailable, slurm.SlurmError) as exc:
            raise SpawnFailed(f"The SLURM cluster does not answer: {exc}") from exc
        choices = SpawnChoices(cluster=limits, modules=list_modules(self.modulepaths))
        if not choices.partitions:
            raise SpawnFailed("The SLURM cluster has no partition that is up")
        MdlmaSlurmSpawner._choices_cache = (time.monotonic(), choices)
        return choices

    @default("options_form")
    def _default_options_form(self):
        return self.render_options_form

    def render_options_form(self, spawner: MdlmaSlurmSpawner | None = None) -> str:
        """The options form's HTML (JupyterHub calls this with the spawner)."""
        template_path = Path(self.options_form_template)
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_path.parent),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        try:
            choices = self.cluster_choices()
        except SpawnFailed as exc:  # a page the user can read instead of a 500
            return f'<div class="alert alert-danger">{html.escape(str(exc))} Please try again later.</div>'
        return environment.get_template(template_path.name).render(choices=choices)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        """Check the submitted form; JupyterHub shows an ``InputError`` on the form page."""
        raw = {key: formdata[key] for key in FORM_FIELDS if key in formdata}
        validate_options(raw, self.cluster_choices())
        return {key: value[0] for key, value in raw.items()}

    # ------------------------------------------------------------------ job script
    def hub_values(self) -> dict[str, Any]:
        """The hub's own parameters of the ``jupyter`` template (locked ones included)."""
        return {
            "job_name": self.job_name,
            "workdir": self.get_req_subvars()["homedir"],
            # What batchspawner would put in {{cmd}}: the port-reporting wrapper and the server.
            "command": shlex.split(self.cmd_formatted_for_batch()),
            "modulepaths": list(self.modulepaths),
            "lmod_init": self.lmod_init,
            "ip": "",  # JUPYTERHUB_SERVICE_URL says where (server_ip)
            "port": 0,  # unified_framework.hub.singleuser picks one from port_range
            "account": self.req_account,
            "qos": self.req_qos,
        }

    def job_params(self) -> dict[str, Any]:
        """Validate the user's options with the hub's values (:class:`InputError` if invalid)."""
        return validate_options(self.user_options or {}, self.cluster_choices(), self.hub_values())

    async def _get_batch_script(self, **subvars):
        """The ``jupyter`` template rendered by the SLURM layer from the validated parameters.

        batchspawner's ``submit_batch_script`` merges the raw ``user_options`` into
        ``subvars``; they are not used: what the script gets is exactly what
        :func:`validate_options` returned in :meth:`start`.
        """
        params = self._job_params if self._job_params is not None else self.job_params()
        template = jupyter_template()  # validation narrowed the modules; rendering needs no sinfo
        return render(template, params, script_context(template))[0].text

    def get_req_subvars(self) -> dict[str, str]:
        subvars = super().get_req_subvars()
        # The log path is a SLURM filename pattern: a '%' in the home folder is escaped.
        subvars["job_log"] = self.job_log.format(
            homedir=escape_filename_pattern(subvars["homedir"], f"home folder of {self.user.name}")
        )
        subvars["sbatch_args"] = shlex.join(
            [
                f"--chdir={subvars['homedir']}",
                f"--output={subvars['job_log']}",
                f"--export={subvars['keepvars']}",
                # The user's login environment (PATH, Lmod) under the job, see docs/hub.md.
                *(["--get-user-env=L"] if self.login_environment else []),
            ]
        )
        return subvars

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env["MDLMA_HUB_PORT_RANGE"] = self.port_range
        return env

    def _user_command(self, command: str) -> str:
        return " ".join((self.exec_prefix.format(username=self.user.name), command))

    async def job_log_tail(self) -> str:
        """Last lines of the job's log, read as the user ("" when it cannot be read)."""
        if not self.job_id:
            return ""
        path = self.job_log.format(homedir=self.get_req_subvars()["homedir"]).replace(
            "%j", self.job_id
        )
        command = self._user_command(f"tail -n {int(self.log_tail_lines)} -- {shlex.quote(path)}")
        try:
            text = await self.run_command(command)
        except RuntimeError as exc:
            return f"(the log {path} could not be read: {exc})"
        return f"--- last lines of {path} ---\n{text[-4000:]}"

    async def _job_died(self, when: str) -> SpawnFailed:
        job_id = self.job_id
        tail = await self.job_log_tail()
        try:
            state = await self.run_command(
                self._user_command(self.final_state_cmd.format(job_id=job_id))
            )
            state = state.splitlines()[0].replace("|", ", exit code ") if state else "state unknown"
        except RuntimeError:
            state = "state unknown"
        message = f"SLURM job {job_id} ended ({state}) {when}."
        self.log.warning("%s's %s\n%s", self.user.name, message, tail)
        self.clear_state()
        return SpawnFailed(
            f"{message}\n{tail}",
            f"<p>{html.escape(message)}</p><pre style='text-align:left; white-space:pre-wrap'>{html.escape(tail)}</pre>",
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        """Validate the options, submit the job, wait for it and for the server's port.

        Raises
        ------
        InvalidOptions
            For invalid options (HTTP 400).
        SpawnFailed
            For a rejected submission, or a job that ends before the server listens.
        """
        try:
            self._job_params = self.job_params()
        except InputError as exc:
            raise InvalidOptions(f"Invalid server options: {exc}") from exc
        self.ip = self.server_ip  # JUPYTERHUB_SERVICE_URL: where the server will listen
        self.port = 0
        if self.server:
            self.server.port = self.port
        try:
            await self.submit_batch_script()
        except RuntimeError as exc:  # sbatch's stderr, e.g. an exceeded limit
            raise SpawnFailed(f"sbatch rejected the job: {exc}") from exc
        if not self.job_id:
            raise SpawnFailed("sbatch printed no job id")

        while True:
            status = await self.query_job_status()
            if status == JobStatus.RUNNING:
                break
            if status not in (JobStatus.PENDING, JobStatus.UNKNOWN):
                raise await self._job_died("while queued or right after it started")
            await asyncio.sleep(self.startup_poll_interval)

        self.ip = self._connect_address(self.state_gethost())
        while self.port == 0:  # set by POST /hub/api/batchspawner from the job
            await asyncio.sleep(self.startup_poll_interval)
            if await self.query_job_status() not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                raise await self._job_died("before the server reported its port")

        deadline = time.monotonic() + self.http_timeout
        while not await self._listening():
            if await self.query_job_status() not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                raise await self._job_died(f"before the server listened on {self.ip}:{self.port}")
            if time.monotonic() > deadline:
                break  # JupyterHub's own http_timeout check reports this
            await asyncio.sleep(self.startup_poll_interval)
        self.db.commit()
        self.log.info(
            "%s's server job %s listens at %s:%s", self.user.name, self.job_id, self.ip, self.port
        )
        return self.ip, self.port

    def _connect_address(self, host: str) -> str:
        """Where the hub reaches the server of a job running on ``host``.

        Raises
        ------
        SpawnFailed
            When the server listens on loopback but the job runs on another host.
        """
        if not is_loopback(self.server_ip):
            return host
        if host.split(".")[0] not in {socket.gethostname().split(".")[0], "localhost"}:
            # JupyterHub stops (scancels) the job of a failed start.
            raise SpawnFailed(
                f"SLURM job {self.job_id} runs on {host}, but servers listen on {self.server_ip}, which the hub "
                "reaches only on its own host; set MdlmaSlurmSpawner.server_ip (MDLMA_HUB_SERVER_IP) to the "
                "nodes' address"
            )
        return self.server_ip

    async def _listening(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.ip, self.port), timeout=2
            )
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    async def stop(self, now: bool = False) -> None:
        if not self.job_id:  # the job already ended (a failed spawn cleared its state)
            return
        await super().stop(now=now)

    async def progress(self):
        """Messages for the spawn page: queued (with SLURM's reason), running, listening."""
        last = None
        while True:
            words = self.job_status.split()
            if not self.job_id:
                event = {"progress": 10, "message": "Submitting the SLURM job..."}
            elif self.state_ispending():
                reason = " ".join(words[1:-1]).strip("()")
                reason = "about to start" if reason in ("", "None") else reason
                event = {"progress": 30, "message": f"Job {self.job_id} is queued ({reason})..."}
            elif self.state_isrunning() and self.port == 0:
                event = {
                    "progress": 60,
                    "message": f"Job {self.job_id} runs on {words[-1]}; starting JupyterLab...",
                }
            elif self.state_isrunning():
                event = {
                    "progress": 80,
                    "message": f"Job {self.job_id}: JupyterLab starts on port {self.port}...",
                }
            else:
                event = {"progress": 10, "message": "Waiting for SLURM..."}
            if event != last:
                yield event
                last = event
            await asyncio.sleep(1)
