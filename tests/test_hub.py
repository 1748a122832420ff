"""Unit tests of the hub's pieces that run without a cluster: sinfo parsing, option
validation, the options form, the job script, the single-user launcher and the
jupyter-server-proxy entries. The end-to-end test is tests/test_hub_e2e.py."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest

from unified_framework.errors import InputError
from unified_framework.hub import serverproxy, singleuser
from unified_framework.hub.cluster import (
    Partition, format_minutes, list_modules, parse_gpus, parse_sinfo, parse_time_limit,
)
from unified_framework.hub.options import SpawnChoices, validate_options

REPO = Path(__file__).resolve().parents[1]

SINFO = """debug*|1:00:00|2|3900|(null)|up
batch|7-00:00:00|2|3900|(null)|up
gpu|2-00:00:00|32|256000|gpu:a100:4(S:0-1)|up
gpu|2-00:00:00|64+|512000|gpu:a100:8|up
old|infinite|8|16000|(null)|down
"""


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("1:00:00", 60), ("10:30", 11), ("7-00:00:00", 10080), ("1-12", 2160), ("2-01:30", 2970),
     ("infinite", None), ("UNLIMITED", None)],
)
def test_parse_time_limit(text, minutes):
    assert parse_time_limit(text) == minutes


def test_parse_time_limit_rejects_garbage():
    with pytest.raises(InputError, match="time limit"):
        parse_time_limit("soon")


def test_format_minutes_round_trips():
    for minutes in (30, 60, 1441, 10080):
        assert parse_time_limit(format_minutes(minutes)) == minutes
    with pytest.raises(InputError):
        format_minutes(0)


def test_parse_gpus():
    assert parse_gpus("(null)") == 0
    assert parse_gpus("gpu:a100:4(S:0-1)") == 4
    assert parse_gpus("gpu:2,shard:8") == 2


def test_parse_sinfo_merges_node_types_and_drops_down_partitions():
    parts = {p.name: p for p in parse_sinfo(SINFO)}
    assert list(parts) == ["debug", "batch", "gpu"]
    assert parts["debug"].default and not parts["batch"].default
    assert parts["gpu"] == Partition("gpu", False, 2880, 64, 512000, 8)
    with pytest.raises(InputError, match="line 1"):
        parse_sinfo("debug|1:00:00|2\n")


def test_list_modules(tmp_path):
    for rel in ("mdlma/unified-framework/0.1.0.lua", "mdlma/unified-framework/.0.0.9.lua", "other/2.lua", "top.lua"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("-- module\n")
    assert list_modules([tmp_path, tmp_path / "missing"]) == ["mdlma/unified-framework/0.1.0", "other/2"]


@pytest.fixture
def choices():
    return SpawnChoices(partitions=parse_sinfo(SINFO), modules=["mdlma/unified-framework/0.1.0"])


def test_validate_options_defaults_and_form_lists(choices):
    assert validate_options({}, choices) == {
        "partition": "debug", "runtime": "0-01:00:00", "nprocs": "1", "memory": "2G", "gres": "",
        "module": "mdlma/unified-framework/0.1.0",
    }
    form = {"partition": ["gpu"], "runtime_minutes": ["240"], "cpus": ["16"], "memory_gb": ["64"], "gpus": ["2"]}
    assert validate_options(form, choices) == {
        "partition": "gpu", "runtime": "0-04:00:00", "nprocs": "16", "memory": "64G", "gres": "gpu:2",
        "module": "mdlma/unified-framework/0.1.0",
    }


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"cpus": "3"}, "cpus"),  # debug nodes have 2
        ({"partition": "debug", "runtime_minutes": 120}, "runtime_minutes"),  # over the 1 h limit
        ({"memory_gb": "8"}, "memory_gb"),
        ({"gpus": "1"}, "gpus"),
        ({"partition": "debug\n#SBATCH --uid=0"}, "partition"),
        ({"module": "mdlma/unified-framework/0.1.0; rm -rf ~"}, "module"),
        ({"cpus": "1; id"}, "cpus"),
        ({"cpus": ["1", "2"]}, "cpus"),
        ({"account": "root"}, "unknown field"),
    ],
)
def test_validate_options_rejects(raw, field, choices):
    with pytest.raises(InputError, match=field):
        validate_options(raw, choices)


def test_options_form_renders_cluster_choices(choices):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "hub_config" / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("options_form.html").render(choices=choices)
    for name in ("partition", "runtime_minutes", "cpus", "memory_gb", "gpus", "module"):
        assert f'name="{name}"' in html
    assert 'value="gpu" data-cpus="64"' in html and 'value="old"' not in html
    assert '<option value="8">8</option>' in html  # GPUs offered up to the best node
    no_gpus = SpawnChoices(partitions=parse_sinfo(SINFO.splitlines()[0]), modules=["<b>x/1</b>"])
    html = env.get_template("options_form.html").render(choices=no_gpus)
    assert 'name="gpus" disabled' in html
    assert "<b>x/1</b>" not in html and "&lt;b&gt;x/1&lt;/b&gt;" in html


def test_job_script_renders_valid_bash(choices, tmp_path):
    from batchspawner.batchspawner import format_template

    options = validate_options({"cpus": "2", "partition": "debug"}, choices)
    script = format_template(
        (REPO / "hub_config" / "templates" / "job.sh.j2").read_text(),
        **options, homedir="/home/alice", keepvars="JUPYTERHUB_API_TOKEN,LANG", job_log="/home/alice/j-%j.log",
        lmod_init="/usr/share/lmod/lmod/init/bash", modulepaths=["/opt/mdlma/modulefiles", "/x"], account="",
        qos="", options="", prologue="", cmd="python -m unified_framework.hub.singleuser jupyterhub-singleuser",
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--partition=debug", "--cpus-per-task=2", "--mem=2G", "--time=0-01:00:00",
                      "--output=/home/alice/j-%j.log", "--export=JUPYTERHUB_API_TOKEN,LANG"):
        assert f"#SBATCH {directive}" in lines
    assert not any("--gres" in line for line in lines)
    assert "module use /opt/mdlma/modulefiles" in lines and "module use /x" in lines
    assert lines[-1] == "exec python -m unified_framework.hub.singleuser jupyterhub-singleuser"
    (tmp_path / "job.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0


def test_port_range_parsing():
    assert singleuser.parse_port_range("50000-50009") == range(50000, 50010)
    for bad in ("50000", "9-8", "80-90", "a-b", "60000-70000"):
        with pytest.raises(InputError, match="MDLMA_HUB_PORT_RANGE"):
            singleuser.parse_port_range(bad)


def test_pick_port_skips_busy_ports():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        low = probe.getsockname()[1]
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
            singleuser.report_port(50124, {"JUPYTERHUB_API_URL": api, "JUPYTERHUB_API_TOKEN": "wrong"})
    finally:
        server.shutdown()
    assert singleuser.service_url_with_port("http://0.0.0.0:0/user/a/", 50123) == "http://0.0.0.0:50123/user/a/"


def test_serverproxy_entries_serve_the_dashboard_on_private_sockets():
    entries = [serverproxy.setup_dashboard(), serverproxy.setup_job_composer(), serverproxy.setup_job_viewer()]
    assert [e["launcher_entry"]["path_info"] for e in entries] == [
        "mdlma-dashboard/", "mdlma-job-composer/composer", "mdlma-job-viewer/viewer"]
    for entry in entries:
        assert entry["unix_socket"] is True and entry["absolute_url"] is False
        assert ET.parse(entry["launcher_entry"]["icon_path"]).getroot().tag.endswith("svg")
        command = [part.format(unix_socket="/tmp/x/socket") for part in entry["command"]]
        assert command[1:5] == ["-m", "uvicorn", "--uds", "/tmp/x/socket"]
        assert command[-1] == "unified_framework.hub.dashboard_asgi:app"
        # XSRF protection stays at Streamlit's default (on): nothing may switch it off.
        assert not any("xsrf" in key.lower() or "cors" in key.lower() for key in entry["environment"])
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
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: config, "__file__": str(path)})
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
    assert "#SBATCH --get-user-env=L" in config.MdlmaSlurmSpawner.batch_script
    from jupyterhub.apihandlers import default_handlers

    from unified_framework.hub.portcallback import PortCallbackHandler

    assert [h for p, h in default_handlers if p == r"/api/batchspawner"] == [PortCallbackHandler]
    assert _hub_config(monkeypatch, tmp_path, MDLMA_HUB_DEV="1").JupyterHub.authenticator_class == "dummy"
    assert _hub_config(monkeypatch, tmp_path, MDLMA_HUB_DEV="0").JupyterHub.authenticator_class == "pam"
