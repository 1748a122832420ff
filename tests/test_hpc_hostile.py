"""Hostile values in every parameter of every template: rejected clearly or rendered inert.

Two layers:

* every (template, parameter, hostile value) goes through validation on its own; it is
  either refused with a one-line :class:`InputError`, or its rendering keeps exactly the
  template's own ``#SBATCH`` directives, each a plain word;
* per template and hostile value, every parameter that accepts the value gets it at
  once, and the rendered script is *executed* with stand-ins for ``mdlma``/``python``/
  ``batchspawner-singleuser`` (the real ones would start real work) that record their
  arguments. A canary file that each injection attempt would create must not appear,
  and the recorded arguments must hold the hostile value verbatim as one argument.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from unified_framework import hpc
from unified_framework.config import load_config
from unified_framework.errors import InputError
from unified_framework.hpc.render import SBATCH_LINE_RE

HOSTILE = [
    "'", '"', "''", "'\"'", "a'b", 'a"b', "\\", "\\n", "$", "#", "-", "--",
    "$(touch CANARY)", "`touch CANARY`", "${IFS}touch${IFS}CANARY", "$((6*7))", "$HOME", "${PATH}", "$'\\x41'",
    '"$(touch CANARY)"', "'$(touch CANARY)'", "'; touch CANARY; '", '"; touch CANARY; "',
    "; touch CANARY", "&& touch CANARY", "|| touch CANARY", "| touch CANARY", "& touch CANARY &",
    "x; touch CANARY #", "x\ntouch CANARY", "x\r\ntouch CANARY", "x\rtouch CANARY",
    "\n#SBATCH --partition=evil", "#SBATCH --nodes=99", "x\n#SBATCH --nodes=99", "--job-name=evil",
    "-o /etc/passwd", "> CANARY", ">> CANARY", "< /etc/passwd", "2>&1", "<(touch CANARY)",
    "../../../etc/passwd", "../", "..", "/", "~root", "~", ".", "*", "?", "[a-z]*", "{a,b}", "!!", "!-1",
    "a b", "  leading space", "trailing space  ", "tab\there", "\x00", "nul\x00byte", "\x1b[31mred\x1b[0m",
    "\x07bell", "\x7f", "line\u2028separator", "next\u0085line", "\ud800 lone surrogate",
    "ünïcödé", "日本語のファイル", "emoji 🙂", "\u202eright-to-left", "\ufeffbom",
    "A" * 300, "B" * 5000, "C" * 100_000, "%j %A %x", "eval touch CANARY", "exec touch CANARY",
    "-rf /", "{{ 7*7 }}", "{% raw %}", "${{7*7}}", "0", "-1", "1e9", "nan", "inf", "True", "None", "[]", "{}",
]


def _values(canary: Path) -> list[str]:
    return [value.replace("CANARY", str(canary)) for value in HOSTILE]


def test_there_are_at_least_fifty_hostile_values():
    assert len(set(HOSTILE)) >= 50


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A working directory with the inputs every template needs, and a canary path."""
    base = tmp_path / "work"
    base.mkdir()
    (base / "run.py").write_text("")
    for name in ("pred.tif", "gt.tif", "volume.tif", "images.tif", "labels.tif", "model"):
        (base / name).write_bytes(b"")
    monkeypatch.chdir(base)
    return base, tmp_path / "canary"


BASELINE = {
    "python-script": {"script": "run.py"},
    "score": {"pred": "pred.tif", "gt": "gt.tif"},
    "sun-train": {"images": "images.tif", "labels": "labels.tif"},
    "sun-predict": {"volume": "volume.tif", "model": "model"},
    "jupyter": {},
}


def _allowed_options(template) -> set[str]:
    options = set()
    for source in template.sources.values():
        for line in source.splitlines():
            if line.startswith("#SBATCH --"):
                options.add(line.split()[1].split("=")[0])
    return options


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_each_parameter_rejects_or_renders_hostile_values_inert(name, sandbox):
    base, canary = sandbox
    template = hpc.load_template(name)
    allowed = _allowed_options(template)
    budget = {script: sum(line.startswith("#SBATCH") for line in src.splitlines()) for script, src in template.sources.items()}
    context = hpc.jobs.script_context(template, load_config())
    counts = {"rejected": 0, "rendered": 0}
    for pname in template.parameters:
        for value in _values(canary):
            params = {**BASELINE[name], pname: value}
            try:
                values = hpc.validate_params(template, params, cwd=base)
            except InputError as exc:
                message = str(exc)
                assert "\n" not in message and "\x00" not in message and len(message) < 400, repr(message)
                assert message.startswith(f"{name}: "), message
                counts["rejected"] += 1
                continue
            for job in hpc.render(template, values, context):
                directives = job.directives
                assert len(directives) <= budget[job.script_name]
                for line in directives:
                    assert SBATCH_LINE_RE.fullmatch(line), (pname, value, line)
                    assert line.split()[1].split("=")[0] in allowed
                assert "\x00" not in job.text
            counts["rendered"] += 1
    # Both outcomes occur: strict fields reject, free text is quoted.
    assert counts["rejected"] and counts["rendered"]
    assert not canary.exists()


STUB = """#!/bin/bash
# Stand-in that records its name, working directory and arguments (NUL-separated).
{ printf '%s\\0' "$(basename "$0")" "$PWD" "$#" "$@"; } >> "$MDLMA_STUB_LOG"
"""


def _creatable(value: str) -> bool:
    return (
        value not in {"", ".", ".."}
        and "/" not in value
        and "\x00" not in value
        and len(value.encode("utf-8", "surrogatepass")) < 200
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    )


def _candidate(p, value: str, base: Path) -> str:
    """The hostile value, or for an existing-path parameter a file/folder named by it."""
    if p.type == "path" and p.exists and _creatable(value):
        if p.kind == "dir":
            target = base / "dirs" / value
            target.mkdir(parents=True, exist_ok=True)
            # As a working directory it must hold the baseline inputs too.
            for name in ("run.py", "pred.tif", "gt.tif", "volume.tif", "images.tif", "labels.tif", "model"):
                (target / name).touch()
        else:
            target = base / "files" / value
            target.parent.mkdir(exist_ok=True)
            target.touch()
        return str(target)
    return value


def _read_calls(log: Path) -> list[tuple[str, str, list[str]]]:
    if not log.exists():
        return []
    fields = log.read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
    calls = []
    while fields:
        name, cwd, count = fields[0], fields[1], int(fields[2])
        calls.append((name, cwd, fields[3 : 3 + count]))
        fields = fields[3 + count :]
    return calls


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_executed_scripts_pass_hostile_values_as_plain_arguments(name, sandbox, tmp_path):
    base, canary = sandbox
    template = hpc.load_template(name)
    # A fake install prefix whose venv/bin holds the stand-ins; Lmod is kept out of the
    # way with a module function that always fails, so the script takes its fallback.
    prefix = tmp_path / "prefix"
    bin_dir = prefix / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for stub in ("mdlma", "python", "batchspawner-singleuser"):
        (bin_dir / stub).write_text(STUB)
        (bin_dir / stub).chmod(0o755)
    config = load_config()
    config["slurm"] = {**config["slurm"], "prefix": str(prefix), "modulepath": str(tmp_path / "nomodules")}
    context = hpc.jobs.script_context(template, config)
    log = tmp_path / "calls.log"
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MDLMA_STUB_LOG": str(log),
        "BASH_FUNC_module%%": "() { return 1; }", "SLURM_ARRAY_TASK_ID": "0",
    }
    executed = 0
    for index, value in enumerate(_values(canary)):
        accepted: dict[str, object] = {}
        for pname, p in template.parameters.items():
            candidate = _candidate(p, value, base)
            try:
                hpc.validate_params(template, {**BASELINE[name], pname: candidate}, cwd=base)
            except InputError:
                continue
            accepted[pname] = candidate
        if not accepted:
            continue
        # Parameters that only work alone (a workdir changes where relative paths point)
        # are tried together; if they clash, the workdir goes back to its default.
        try:
            values = hpc.validate_params(template, {**BASELINE[name], **accepted}, cwd=base)
        except InputError:
            accepted.pop("workdir", None)
            values = hpc.validate_params(template, {**BASELINE[name], **accepted}, cwd=base)
        log.unlink(missing_ok=True)
        for job in hpc.render(template, values, context):
            script = tmp_path / f"job-{index}-{job.step}.sh"
            script.write_text(job.text, encoding="utf-8", errors="surrogateescape")
            proc = subprocess.run(["bash", str(script)], env=env, cwd=base, capture_output=True, timeout=30)
            assert proc.returncode == 0, (value, proc.stderr[-500:])
            assert not canary.exists(), f"{name}: value {value!r} ran a command"
        calls = _read_calls(log)
        assert calls, "the stand-in was never called"
        arguments = [a for _, _, args in calls for a in args]
        assert {cwd for _, cwd, _ in calls} == {values["workdir"]}
        for pname in accepted:
            p = template.parameters[pname]
            if p.type in {"path", "args"} and not p.locked and pname != "workdir":
                expected = values[pname] if isinstance(values[pname], list) else [values[pname]]
                for item in expected:
                    # One argument each: bare, or as the value of an --option=.
                    assert any(a == item or a.endswith("=" + item) for a in arguments), (pname, value, arguments[:8])
        executed += 1
    assert executed >= 40
    assert not canary.exists()
