"""The module catalogue, its generated files, and the real Lmod loading the module."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from unified_framework.cli.main import build_parser
from unified_framework.errors import InputError
from unified_framework.modules import load_catalogue, load_module_spec, render_modulefile

REPO = Path(__file__).resolve().parents[1]


def _clean_path() -> str:
    # Lmod de-duplicates PATH on load, so start from a PATH without duplicates.
    seen, parts = set(), []
    for part in os.environ["PATH"].split(":"):
        if part and part not in seen and ".mdlma" not in part:
            seen.add(part)
            parts.append(part)
    return ":".join(parts)


def _lmod(lmod_init: Path, script: str) -> subprocess.CompletedProcess:
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": _clean_path(), "LANG": "C.UTF-8"}
    full = f"set -e\nsource {lmod_init}\n{textwrap.dedent(script)}"
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", full],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_repo_lmod_folder_is_generated_from_the_catalogue():
    for spec in load_catalogue(REPO / "modules"):
        committed = (REPO / "lmod" / spec.modulefile_relpath).read_text()
        assert committed == render_modulefile(spec, None), "run: mdlma modules sync-repo"


def test_modulefile_content_is_plain_lmod():
    spec = load_catalogue(REPO / "modules")[0]
    text = render_modulefile(spec, "/opt/mdlma")
    assert "help([[" in text and 'whatis("Name: mdlma/unified-framework")' in text
    assert 'family("mdlma")' in text
    assert 'prepend_path("JUPYTER_PATH"' in text and "conda" not in text.replace(
        "conda environment", ""
    )


def _verbs(parser) -> dict:
    """Sub-command name -> its parser, of an argparse parser (empty if it has none)."""
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if action.__class__.__name__ == "_SubParsersAction":
            return dict(action.choices)
    return {}


#: Words of features that are planned but have no verb yet: the module may name them
#: only once the CLI has the verb.
PLANNED = {"regist": "register", "reconstruct": "recon", "tomopy": "recon"}


def test_module_text_names_only_what_the_cli_has():
    verbs = _verbs(build_parser())
    for spec in load_catalogue(REPO / "modules"):
        commands = [
            line.split() for line in spec.help.splitlines() if line.strip().startswith("mdlma ")
        ]
        # Every verb is listed, and every listed verb (and sub-command) exists.
        assert sorted({c[1] for c in commands}) == sorted(verbs), spec.source
        for command in commands:
            actions = _verbs(verbs[command[1]])
            if (
                actions
                and len(command) > 2
                and command[2].replace("|", "").isalpha()
                and command[2].islower()
            ):
                for action in command[2].split("|"):
                    assert action in actions, (command, sorted(actions))
        whatis = " ".join([spec.description, *spec.bundles, spec.help]).lower()
        for word, verb in PLANNED.items():
            if word in whatis.replace("tomopy only in the conda environment", ""):
                assert verb in verbs, (
                    f"{spec.source}: names {word!r} but mdlma has no {verb!r} verb"
                )


@pytest.mark.parametrize(
    "content, field",
    [
        ("version: 1\ndescription: d\nhelp: h\n", "name"),
        ("name: Bad Name\nversion: '1'\ndescription: d\nhelp: h\n", "name"),
        ("name: a/b\nversion: '1'\ndescription: d\nhelp: h\nenvironment: {lower: x}\n", "lower"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_module_description_names_file_and_field(tmp_path, content, field):
    path = tmp_path / "broken.yml"
    path.write_text(content)
    with pytest.raises(InputError, match=rf"broken\.yml.*{field}"):
        load_module_spec(path)


@pytest.mark.lmod
def test_real_lmod_loads_and_unloads_the_module(lmod_init, prefix):
    result = _lmod(
        lmod_init,
        f"""
        before="$PATH"
        module use {REPO / "lmod"}
        module load mdlma/unified-framework
        echo "which=$(command -v mdlma)"
        mdlma --version
        python -c "import unified_framework, sys; print('import-ok', sys.prefix)"
        jupyter kernelspec list --json > kernels.json.tmp && cat kernels.json.tmp && rm kernels.json.tmp
        module unload mdlma/unified-framework
        [ "$PATH" = "$before" ] && echo PATH-RESTORED
        [ -z "${{MDLMA_PREFIX:-}}" ] && echo ENV-CLEARED
    """,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"which={prefix}/venv/bin/mdlma" in out
    assert "mdlma 0.1.0" in out and "import-ok" in out
    kernels = json.loads(out[out.index("{") : out.rindex("}") + 1])["kernelspecs"]
    assert kernels["mdlma-unified-framework"]["spec"]["display_name"].startswith("Python 3 (MDLMA")
    assert "PATH-RESTORED" in out and "ENV-CLEARED" in out


@pytest.mark.lmod
def test_module_kernel_starts_and_runs_code(lmod_init, prefix):
    result = _lmod(
        lmod_init,
        f"""
        module use {REPO / "lmod"}
        module load mdlma/unified-framework
        python - <<'PY'
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="mdlma-unified-framework", startup_timeout=120)
try:
    reply = kc.execute_interactive("import unified_framework, os; print('kernel', unified_framework.__version__, os.environ['MDLMA_MODULE_VERSION'])", timeout=60)
    assert reply["content"]["status"] == "ok", reply
finally:
    kc.stop_channels(); km.shutdown_kernel(now=True)
PY
    """,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kernel 0.1.0 0.1.0" in result.stdout


@pytest.mark.lmod
def test_install_into_a_prefix_is_idempotent_and_loadable(lmod_init, prefix, tmp_path):
    target = tmp_path / "opt" / "mdlma"
    for _ in range(2):
        run = subprocess.run(
            ["bash", str(REPO / "scripts" / "install"), "--prefix", str(target)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert run.returncode == 0, run.stderr[-2000:]
    modulefile = target / "modulefiles" / "mdlma" / "unified-framework" / "0.1.0.lua"
    assert f'"{target}"' in modulefile.read_text() or f"[[{target}]]" in modulefile.read_text()
    kernel = json.loads(
        (target / "share/jupyter/kernels/mdlma-unified-framework/kernel.json").read_text()
    )
    assert kernel["argv"][0] == str(target / "venv" / "bin" / "python")
    result = _lmod(
        lmod_init,
        f"""
        module use {target / "modulefiles"}
        module load mdlma/unified-framework
        echo "prefix=$MDLMA_PREFIX"
        mdlma info --json > /dev/null && echo INFO-OK
    """,
    )
    assert result.returncode == 0, result.stderr
    assert f"prefix={target}" in result.stdout and "INFO-OK" in result.stdout
