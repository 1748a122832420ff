"""Unit tests of the hub's pieces that run without a cluster: sinfo parsing, option
validation, the options form, the job script, the single-user launcher, the
jupyter-server-proxy entries, the development login, and (as root, with the local user
``mdlmatest``) the state-folder checks of ``scripts/hub``, which refuse before anything
starts. The end-to-end test is tests/test_hub_e2e.py."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import pwd
import socket
import subprocess
import threading
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest
from conftest_slurm import as_test_user, ensure_test_user

from unified_framework.errors import InputError
from unified_framework.hpc.slurm import SEP, format_minutes, parse_duration, parse_sinfo
from unified_framework.hpc.validation import ClusterLimits
from unified_framework.hub import serverproxy, singleuser
from unified_framework.hub.auth import DevAuthenticator, service_account_reason
from unified_framework.hub.cluster import list_modules
from unified_framework.hub.options import SpawnChoices, validate_options
from unified_framework.hub.spawner import InvalidOptions, MdlmaSlurmSpawner

REPO = Path(__file__).resolve().parents[1]

# What the hub's options form is built from: the SLURM layer's two sinfo readings
# (partitions; nodes), as unified_framework.hpc.slurm.sinfo asks for them.
SINFO_PARTITIONS = "\n".join(
    SEP.join(f)
    for f in [
        ["debug*", "up", "1:00:00", "n/a"],
        ["batch", "up", "7-00:00:00", "n/a"],
        ["gpu", "up", "2-00:00:00", "n/a"],
        ["old", "down", "infinite", "n/a"],
    ]
)
SINFO_NODES = "\n".join(
    SEP.join(f)
    for f in [
        ["n1", "debug*", "idle", "2", "0/2/0/2", "3900", "3000", "(null)", "(null)"],
        ["n1", "batch", "idle", "2", "0/2/0/2", "3900", "3000", "(null)", "(null)"],
        ["g1", "gpu", "idle", "32", "0/32/0/32", "256000", "1", "gpu:a100:4(S:0-1)", "(null)"],
        ["g2", "gpu", "idle", "64", "0/64/0/64", "512000+", "1", "gpu:a100:8", "(null)"],
        ["o1", "old", "down", "8", "0/0/8/8", "16000", "1", "(null)", "(null)"],
    ]
)


def up_partitions(partition_text: str = SINFO_PARTITIONS):
    return [p for p in parse_sinfo(partition_text, SINFO_NODES)[0] if p.available]


def cluster(partition_text: str = SINFO_PARTITIONS) -> ClusterLimits:
    return ClusterLimits({p.name: p for p in parse_sinfo(partition_text, SINFO_NODES)[0]})


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("1:00:00", 60),
        ("10:30", 11),
        ("7-00:00:00", 10080),
        ("1-12", 2160),
        ("2-01:30", 2970),
        ("infinite", None),
        ("UNLIMITED", None),
    ],
)
def test_parse_time_limit(text, minutes):
    # The one SLURM time parser (seconds); a part minute counts as a minute of the limit.
    seconds = parse_duration(text)
    assert (None if seconds == float("inf") else -(-seconds // 60)) == minutes


def test_parse_time_limit_rejects_garbage():
    with pytest.raises(InputError, match="time limit"):
        parse_duration("soon")


def test_format_minutes_round_trips():
    for minutes in (30, 60, 1441, 10080):
        assert parse_duration(format_minutes(minutes)) == minutes * 60
    with pytest.raises(InputError):
        format_minutes(0)


def test_parse_gpus():
    from unified_framework.hpc.slurm import count_gpus

    assert count_gpus("(null)") == 0
    assert count_gpus("gpu:a100:4(S:0-1)") == 4
    assert count_gpus("gpu:2,shard:8") == 2


def test_parse_sinfo_merges_node_types_and_drops_down_partitions():
    parts = {p.name: p for p in up_partitions()}
    assert list(parts) == ["debug", "batch", "gpu"]
    assert parts["debug"].default and not parts["batch"].default
    gpu = parts["gpu"]
    assert (gpu.default, gpu.max_minutes, gpu.max_cpus_per_node) == (False, 2880, 64)
    assert (gpu.max_memory_mb_per_node, gpu.max_gpus_per_node) == (512000, 8)
    # A line with too few fields is not a partition.
    assert parse_sinfo("debug|1:00:00|2\n", SINFO_NODES)[0] == []


def test_list_modules(tmp_path):
    for rel in (
        "mdlma/unified-framework/0.1.0.lua",
        "mdlma/unified-framework/.0.0.9.lua",
        "other/2.lua",
        "top.lua",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("-- module\n")
    assert list_modules([tmp_path, tmp_path / "missing"]) == [
        "mdlma/unified-framework/0.1.0",
        "other/2",
    ]


@pytest.fixture
def choices():
    choices = SpawnChoices(cluster=cluster(), modules=["mdlma/unified-framework/0.1.0"])
    assert choices.partitions == up_partitions()  # the form offers the partitions that are up
    return choices


def _chosen(params: dict) -> dict:
    """The jupyter template's parameters the options form sets."""
    return {k: params[k] for k in ("partition", "time", "cpus", "mem", "gpus", "module")}


def test_validate_options_defaults_and_form_lists(choices):
    assert _chosen(validate_options({}, choices)) == {
        "partition": "debug",
        "time": "0-01:00:00",
        "cpus": 1,
        "mem": "2G",
        "gpus": 0,
        "module": "mdlma/unified-framework/0.1.0",
    }
    form = {
        "partition": ["gpu"],
        "runtime_minutes": ["240"],
        "cpus": ["16"],
        "memory_gb": ["64"],
        "gpus": ["2"],
    }
    assert _chosen(validate_options(form, choices)) == {
        "partition": "gpu",
        "time": "0-04:00:00",
        "cpus": 16,
        "mem": "64G",
        "gpus": 2,
        "module": "mdlma/unified-framework/0.1.0",
    }


def test_validate_options_passes_on_only_the_cleaned_values(choices):
    # The SLURM layer's validators strip blanks around names (after refusing control
    # characters); only the cleaned name reaches the script.
    options = validate_options(
        {"partition": " debug ", "module": "mdlma/unified-framework/0.1.0 "}, choices
    )
    assert options["partition"] == "debug"
    assert options["module"] == "mdlma/unified-framework/0.1.0"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"cpus": "3"}, "cpus"),  # debug nodes have 2
        ({"partition": "debug", "runtime_minutes": 120}, "runtime_minutes"),  # over the 1 h limit
        ({"memory_gb": "8"}, "memory_gb"),
        ({"gpus": "1"}, "gpus"),
        ({"partition": "debug\n#SBATCH --uid=0"}, "partition"),
        # Once accepted as a stripped copy while the raw value went into the script:
        ({"partition": "debug\n"}, "partition: control character U\\+000A"),
        ({"module": "mdlma/unified-framework/0.1.0\n"}, "module: control character"),
        ({"cpus": " 1"}, "cpus"),
        ({"module": "mdlma/unified-framework/0.1.0; rm -rf ~"}, "module"),
        ({"cpus": "1; id"}, "cpus"),
        ({"cpus": ["1", "2"]}, "cpus"),
        ({"account": "root"}, "unknown field"),
        ({"command": "bash"}, "unknown field"),  # hub-only template parameters stay the hub's
        ({"module": "other/1.0"}, "module: 'other/1.0' is not one of"),  # only the hub's modules
        (
            {"partition": "batch", "runtime_minutes": "4320"},
            "runtime_minutes: .* above the maximum",
        ),
        ({"partition": "old"}, "partition: 'old' is not available"),
    ],
)
def test_validate_options_rejects(raw, field, choices):
    with pytest.raises(InputError, match=field):
        validate_options(raw, choices)


def test_options_form_renders_cluster_choices(choices):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO / "hub_config" / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("options_form.html").render(choices=choices)
    for name in ("partition", "runtime_minutes", "cpus", "memory_gb", "gpus", "module"):
        assert f'name="{name}"' in html
    assert 'value="gpu" data-cpus="64"' in html and 'value="old"' not in html
    assert '<option value="8">8</option>' in html  # GPUs offered up to the best node
    no_gpus = SpawnChoices(
        cluster=cluster(SINFO_PARTITIONS.splitlines()[0]), modules=["<b>x/1</b>"]
    )
    html = env.get_template("options_form.html").render(choices=no_gpus)
    assert 'name="gpus" disabled' in html
    assert "<b>x/1</b>" not in html and "&lt;b&gt;x/1&lt;/b&gt;" in html


def test_job_script_renders_valid_bash(choices, tmp_path, monkeypatch):
    """The hub's job script is slurm_templates/jupyter, rendered by hpc; what is about the
    submission (log, folder, environment) goes on sbatch's command line."""
    monkeypatch.setattr(MdlmaSlurmSpawner, "_choices_cache", (time.monotonic(), choices))
    submitted, args = tmp_path / "job.sh", tmp_path / "args"
    spawner = _spawner(
        tmp_path,
        exec_prefix="",
        batch_submit_cmd=f"cat > {submitted}; printf '%s\\n' {{sbatch_args}} > {args}; echo 42",
        req_homedir="/home/alice",
        req_keepvars="JUPYTERHUB_API_TOKEN,LANG",
        job_log="{homedir}/j-%j.log",
        lmod_init="/usr/share/lmod/lmod/init/bash",
        modulepaths=["/opt/mdlma/modulefiles", "/x"],
        batchspawner_singleuser_cmd="python -m unified_framework.hub.singleuser",
    )
    spawner.user_options = {"cpus": "2", "partition": "debug"}
    spawner._job_params = spawner.job_params()
    assert asyncio.run(spawner.submit_batch_script()) == "42"
    script = submitted.read_text()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in (
        "--job-name=jupyterhub",
        "--partition=debug",
        "--cpus-per-task=2",
        "--mem=2G",
        "--time=0-01:00:00",
    ):
        assert f"#SBATCH {directive}" in lines
    assert args.read_text().splitlines() == [
        "--chdir=/home/alice",
        "--output=/home/alice/j-%j.log",
        "--export=JUPYTERHUB_API_TOKEN,LANG",
        "--get-user-env=L",
    ]
    assert not any("--gres" in line for line in lines)
    assert "module use /opt/mdlma/modulefiles" in lines and "module use /x" in lines
    assert "module load mdlma/unified-framework/0.1.0 ||" in script
    assert "mdlma_prefix=" not in script  # the hub's module only, no fallback environment
    assert lines[-1].startswith(
        "exec python -m unified_framework.hub.singleuser jupyterhub-singleuser --notebook-dir=/home/alice"
    )
    assert subprocess.run(["bash", "-n", str(submitted)]).returncode == 0


def test_port_range_parsing():
    assert singleuser.parse_port_range("50000-50009") == range(50000, 50010)
    for bad in ("50000", "9-8", "80-90", "a-b", "60000-70000"):
        with pytest.raises(InputError, match="MDLMA_HUB_PORT_RANGE"):
            singleuser.parse_port_range(bad)


def _two_free_ports() -> int:
    """The first of two free neighbouring ports below the kernel's ephemeral range (from 32768),
    so no other test's connection is handed the second one meanwhile."""
    for low in range(20000 + os.getpid() % 5000 * 2, 32766, 2):
        try:
            for port in (low, low + 1):
                with socket.socket() as probe:
                    probe.bind(("", port))
        except OSError:
            continue
        return low
    raise AssertionError("no two free neighbouring ports in 20000-32767")


def test_pick_port_skips_busy_ports():
    low = _two_free_ports()
    ports = range(low, low + 2)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("", low))
        busy.listen()
        assert all(singleuser.pick_port(ports) == low + 1 for _ in range(5))
        with pytest.raises(RuntimeError, match="no free port"):
            singleuser.pick_port(range(low, low + 1))


class _Hub(http.server.BaseHTTPRequestHandler):
    """A real HTTP endpoint standing in for the hub's /api/batchspawner."""

    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.headers["Authorization"] == "token secret"
        self.received.append(body)
        self.send_response(201 if ok else 403)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_report_port_posts_to_the_hub_and_fails_loudly():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    try:
        singleuser.report_port(50123, {"JUPYTERHUB_API_URL": api, "JUPYTERHUB_API_TOKEN": "secret"})
        assert _Hub.received[-1] == {"port": 50123}
        with pytest.raises(RuntimeError, match="did not accept"):
            singleuser.report_port(
                50124, {"JUPYTERHUB_API_URL": api, "JUPYTERHUB_API_TOKEN": "wrong"}
            )
    finally:
        server.shutdown()
    assert (
        singleuser.service_url_with_port("http://0.0.0.0:0/user/a/", 50123)
        == "http://0.0.0.0:50123/user/a/"
    )


def test_serverproxy_entries_serve_the_dashboard_on_private_sockets():
    entries = [
        serverproxy.setup_dashboard(),
        serverproxy.setup_job_composer(),
        serverproxy.setup_job_viewer(),
    ]
    assert [e["launcher_entry"]["path_info"] for e in entries] == [
        "mdlma-dashboard/",
        "mdlma-job-composer/composer",
        "mdlma-job-viewer/viewer",
    ]
    for entry in entries:
        assert entry["unix_socket"] is True and entry["absolute_url"] is False
        assert ET.parse(entry["launcher_entry"]["icon_path"]).getroot().tag.endswith("svg")
        command = [part.format(unix_socket="/tmp/x/socket") for part in entry["command"]]
        assert command[1:5] == ["-m", "uvicorn", "--uds", "/tmp/x/socket"]
        assert command[-1] == "unified_framework.hub.dashboard_asgi:app"
        # XSRF protection stays at Streamlit's default (on): nothing may switch it off.
        assert not any(
            "xsrf" in key.lower() or "cors" in key.lower() for key in entry["environment"]
        )
        assert not any("xsrf" in part.lower() for part in command)


def _hub_config(monkeypatch, tmp_path, **env):
    """Execute hub_config/jupyterhub_config.py as JupyterHub does, with a fresh Config."""
    from traitlets.config import Config

    monkeypatch.setenv("MDLMA_HUB_STATE", str(tmp_path))
    monkeypatch.delenv("MDLMA_HUB_DEV", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = Config()
    path = REPO / "hub_config" / "jupyterhub_config.py"
    exec(
        compile(path.read_text(), str(path), "exec"),
        {"get_config": lambda: config, "__file__": str(path)},
    )
    return config


def test_hub_config_uses_pam_unless_dev(monkeypatch, tmp_path):
    from unified_framework.hub.spawner import MdlmaSlurmSpawner

    config = _hub_config(monkeypatch, tmp_path, MDLMA_HUB_PORT="8123", MDLMA_HUB_MODULEPATH="/a:/b")
    assert config.JupyterHub.authenticator_class == "pam"
    assert config.Authenticator.blocked_users == {"root"}
    assert config.JupyterHub.spawner_class is MdlmaSlurmSpawner
    assert config.JupyterHub.bind_url == "http://127.0.0.1:8123"
    assert config.MdlmaSlurmSpawner.modulepaths == ["/a", "/b"]
    assert config.MdlmaSlurmSpawner.exec_prefix.startswith("runuser -u {username}")
    # The job script is the jupyter template (rendered by hpc), not one of the hub's own.
    assert "batch_script" not in config.MdlmaSlurmSpawner
    assert not (REPO / "hub_config" / "templates" / "job.sh.j2").exists()
    from jupyterhub.apihandlers import default_handlers

    from unified_framework.hub.portcallback import PortCallbackHandler

    assert [h for p, h in default_handlers if p == r"/api/batchspawner"] == [PortCallbackHandler]
    assert config.MdlmaSlurmSpawner.server_ip == "127.0.0.1"
    # The environment alone once switched to a login that takes any password.
    assert (
        _hub_config(monkeypatch, tmp_path, MDLMA_HUB_DEV="1").JupyterHub.authenticator_class
        == "pam"
    )


def test_dev_login_only_from_the_command_line_of_scripts_hub(monkeypatch, tmp_path):
    """`scripts/hub start --dev` passes the class on jupyterhub's command line, which wins
    over the configuration file; JupyterHub's own parsing decides, as at a real start."""
    from jupyterhub.app import JupyterHub

    line = next(
        text
        for text in (REPO / "scripts" / "hub").read_text().splitlines()
        if text.startswith("DEV_AUTHENTICATOR=")
    )
    monkeypatch.setenv("MDLMA_HUB_STATE", str(tmp_path))
    monkeypatch.setenv("MDLMA_HUB_DEV", "1")
    config_file = str(REPO / "hub_config" / "jupyterhub_config.py")
    dev = [f"--JupyterHub.authenticator_class={line.split('=', 1)[1]}"]
    for argv, expected in (([], "PAMAuthenticator"), (dev, "DevAuthenticator")):
        app = JupyterHub()
        app.parse_command_line(["-f", config_file, *argv])
        app.load_config_file(app.config_file)
        assert app.authenticator_class.__name__ == expected, argv


def test_dev_login_refuses_service_accounts_and_warns(caplog):
    person = ensure_test_user()  # uid >= 1000, /bin/bash
    log = logging.getLogger("test-dev-login")
    with caplog.at_level(logging.WARNING, logger="test-dev-login"):
        auth = DevAuthenticator(log=log)
    assert "DEVELOPMENT LOGIN" in caplog.text

    def login(name: str):
        return asyncio.run(auth.authenticate(None, {"username": name, "password": "anything"}))

    assert login(person) == person
    for name in ("root", "daemon", "nobody", "no-such-account-here"):
        assert login(name) is None, name
    assert "uid 1 is below 1000" in service_account_reason("daemon")
    assert "not a login shell" in service_account_reason("nobody")  # uid 65534, /usr/sbin/nologin
    assert "not a login shell" in service_account_reason(person, shells=frozenset({"/bin/zsh"}))


def _spawner(tmp_path, **traits) -> MdlmaSlurmSpawner:
    """A spawner outside a running hub: the user and hub objects it reads, nothing else."""
    user = types.SimpleNamespace(name="root", url="/user/root/", escaped_name="root")
    hub = types.SimpleNamespace(
        public_host="",
        api_url="http://127.0.0.1:8081/hub/api",
        base_url="/hub/",
        url="http://127.0.0.1:8081/hub/",
    )
    return MdlmaSlurmSpawner(user=user, hub=hub, **{"modulepaths": [str(tmp_path)], **traits})


def test_job_script_gets_the_validated_options_not_the_raw_ones(choices, tmp_path, monkeypatch):
    """batchspawner's submit_batch_script merges the raw user_options over the template
    variables. The submit command here writes the script to a file instead of calling
    sbatch (only the rendered script is under test) and prints a job id."""
    monkeypatch.setattr(MdlmaSlurmSpawner, "_choices_cache", (time.monotonic(), choices))
    script = tmp_path / "submitted.sh"
    spawner = _spawner(tmp_path, exec_prefix="", batch_submit_cmd=f"cat > {script}; echo 42")
    spawner.user_options = {"partition": "batch"}
    spawner._job_params = spawner.job_params()
    spawner.user_options = {
        "partition": "batch\n#SBATCH --uid=0",
        "module": "mdlma/unified-framework/0.1.0; id",
    }
    assert asyncio.run(spawner.submit_batch_script()) == "42"
    text = script.read_text()
    assert "#SBATCH --partition=batch\n" in text and "#SBATCH --time=0-01:00:00\n" in text
    assert "--uid=0" not in text and "; id" not in text
    assert "module load mdlma/unified-framework/0.1.0 ||" in text


def test_job_log_in_a_home_folder_with_percent_signs_stays_literal(choices, tmp_path, monkeypatch):
    """SLURM expands %j, %u, ... anywhere in --output, so a '%' in the home folder is
    doubled in sbatch's --output, while the hub reads the log at the literal path."""
    monkeypatch.setattr(MdlmaSlurmSpawner, "_choices_cache", (time.monotonic(), choices))
    script, args = tmp_path / "submitted.sh", tmp_path / "args"
    spawner = _spawner(
        tmp_path,
        exec_prefix="",
        batch_submit_cmd=f"cat > {script}; printf '%s\\n' {{sbatch_args}} > {args}; echo 42",
        req_homedir="/home/ann%u 100%",
    )
    spawner._job_params = spawner.job_params()
    assert asyncio.run(spawner.submit_batch_script()) == "42"
    assert "--output=/home/ann%%u 100%%/.mdlma-jupyterhub-%j.log" in args.read_text().splitlines()
    assert "--chdir=/home/ann%u 100%" in args.read_text().splitlines()  # --chdir is literal
    assert "cd -- '/home/ann%u 100%'\n" in script.read_text()
    spawner.job_id = "42"
    spawner.run_command = lambda command: asyncio.sleep(0, result=command)  # echo what would run
    assert "'/home/ann%u 100%/.mdlma-jupyterhub-42.log'" in asyncio.run(spawner.job_log_tail())


def test_invalid_spawn_options_are_http_400_with_the_message(choices, tmp_path, monkeypatch):
    spawner = _spawner(tmp_path)
    monkeypatch.setattr(
        MdlmaSlurmSpawner, "_choices_cache", (time.monotonic(), choices)
    )  # no sinfo needed
    spawner.user_options = {"partition": "debug\n"}
    with pytest.raises(InvalidOptions) as caught:
        asyncio.run(spawner.start())
    assert caught.value.status_code == 400
    assert caught.value.jupyterhub_message.startswith(
        "Invalid server options: partition: control character U+000A"
    )
    assert caught.value.log_message % caught.value.args == caught.value.jupyterhub_message


def test_server_listens_on_loopback_and_only_for_jobs_on_this_host(tmp_path):
    spawner = _spawner(tmp_path)
    assert spawner.server_ip == "127.0.0.1"
    assert spawner._connect_address(socket.gethostname()) == "127.0.0.1"
    with pytest.raises(Exception, match="runs on node-elsewhere, but servers listen on 127.0.0.1"):
        spawner._connect_address("node-elsewhere")
    assert _spawner(tmp_path, server_ip="10.1.2.3")._connect_address("node7") == "node7"


# ------------------------------------------------------------------ state folder (scripts/hub)
HUB = str(REPO / "scripts" / "hub")


def _hub(*args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MDLMA_HUB_STATE": str(state)}
    return subprocess.run([HUB, *args], env=env, capture_output=True, text=True, timeout=120)


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[hub] error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def root_state(tmp_path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("scripts/hub start/stop need root")
    state = tmp_path / "hub-state"
    state.mkdir(mode=0o700)
    return state


def test_hub_start_refuses_a_state_folder_another_user_planted(planted_state):
    """The attack: mdlmatest creates the folder first, with a cookie secret they know."""
    secret = planted_state / "jupyterhub_cookie_secret"
    as_test_user("sh", "-c", f"echo 00112233 > {secret} && chmod 600 {secret}")
    proc = _hub("start", state=planted_state)
    _refused(proc, f"state folder {planted_state} belongs to mdlmatest", "rm -rf")
    assert secret.read_text() == "00112233\n" and sorted(
        p.name for p in planted_state.iterdir()
    ) == [secret.name]
    assert _hub("check", state=planted_state).returncode != 0


def test_hub_start_refuses_unsafe_secrets_and_parents(root_state, local_user_dir):
    secret = root_state / "jupyterhub_cookie_secret"
    secret.write_text("00112233\n")
    secret.chmod(0o620)  # group-writable
    _refused(
        _hub("start", state=root_state),
        f"secret {secret} is accessible to group or others",
        "chmod 600",
    )
    secret.chmod(0o600)
    (root_state / "jupyterhub.sqlite").write_bytes(b"")
    (root_state / "jupyterhub.sqlite").chmod(0o644)  # readable by all: it holds tokens
    _refused(_hub("start", state=root_state), "jupyterhub.sqlite is accessible")
    (root_state / "jupyterhub.sqlite").chmod(0o600)
    (root_state / "jupyterhub.log").symlink_to("/etc/shadow")
    _refused(_hub("start", state=root_state), "jupyterhub.log is a symbolic link")
    (root_state / "jupyterhub.log").unlink()
    assert _hub("check", state=root_state).stdout.strip() == str(root_state)
    # A root-owned state folder inside a folder another user owns: they can swap it.
    below = local_user_dir / "state"
    below.mkdir(mode=0o700)
    _refused(
        _hub("start", state=below),
        f"{local_user_dir} (above the state folder",
        "belongs to mdlmatest",
    )


@pytest.fixture
def local_user_dir(tmp_path) -> Path:
    """A folder of mdlmatest (root's tmp_path above it)."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    entry = pwd.getpwnam(ensure_test_user())
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def test_hub_stop_kills_only_processes_of_this_hub(root_state):
    """Pid files naming unrelated processes (a number may be reused, a file planted)."""
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(2)]
    try:
        (root_state / "jupyterhub.pid").write_text(f"{sleepers[0].pid}\n")
        (root_state / "proxy.pid").write_text(f"{sleepers[1].pid}\n")
        proc = _hub("stop", state=root_state)
        assert proc.returncode == 0 and "not running" in proc.stdout, proc.stdout + proc.stderr
        time.sleep(0.2)
        assert [s.poll() for s in sleepers] == [None, None]
        assert _hub("status", state=root_state).returncode == 3
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
