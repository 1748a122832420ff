"""Hostile values in every parameter of every template: refused clearly or passed on literally.

The values are generated (:func:`hostile_values`): injection payloads in every shell
context (``$()``, backticks, ``;``, ``&&``, pipes, newlines, quotes, process
substitution, ``$IFS``), leading dashes, SLURM filename patterns (``%j``, ``%%``) and
backslashes, every ASCII control character, Unicode separators, bidi controls,
surrogates, full-width look-alikes, template syntax, and lengths at and around every
length limit. Three layers:

* every (template, parameter, value) goes through validation on its own; it is either
  refused with a one-line :class:`InputError`, or its rendering keeps exactly the
  template's own ``#SBATCH`` directives, each a plain word;
* per template and value, every parameter that accepts the value gets it at once and
  the rendered scripts are *executed* with stand-ins on ``PATH`` for the commands the
  templates run (``mdlma``, ``python``, ``batchspawner-singleuser``) and for the SLURM
  commands an injection would reach for (``sbatch``, ``srun``, ...); each records its
  argument vector. The only call must be the template's own command with exactly the
  expected arguments (every value verbatim, one argument each), and a canary file
  that each injection attempt would create must not appear;
* every working directory that validates is submitted through a stand-in ``sbatch``
  (the real one is exercised in ``tests/test_slurm_jobs.py``; a hundred real jobs would
  not keep this test fast): ``--chdir`` is the folder verbatim and ``--output``,
  expanded by SLURM's filename-pattern rules, is the record folder's log — or the
  submission is refused on one line where SLURM cannot write the log.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from unified_framework import hpc
from unified_framework.config import load_config
from unified_framework.errors import InputError
from unified_framework.hpc.render import SBATCH_LINE_RE
from unified_framework.hpc.validation import (
    DEFAULT_MAX_LENGTH,
    SLURM_WORD_RE,
    check_module,
    check_partition,
)

#: Commands an injection would run; ``CANARY`` becomes a path that must never appear.
PAYLOADS = ("touch CANARY", "sbatch --wrap=CANARY", "srun touch CANARY")
#: Shell contexts a payload may try to break out of ('@' is the payload).
WRAPPERS = (
    "@",
    "$(@)",
    "`@`",
    ";@",
    "; @",
    "x; @ #",
    "&& @",
    "|| @",
    "| @",
    "& @ &",
    "\n@",
    "\r\n@",
    "\r@",
    "'; @; '",
    '"; @; "',
    '"$(@)"',
    "'$(@)'",
    "\\$(@)",
    "$(eval '@')",
    "<(@)",
    ">(@)",
    "$({ @; })",
    "\n#SBATCH --wrap='@'",
    "{{ '@' }}",
    "＄（@）",
)
FIXED = (
    # leading dashes: options where a file name or word is expected
    "-",
    "--",
    "-x",
    "--help",
    "-rf /",
    "--job-name=evil",
    "--output=/tmp/evil",
    "-o /etc/passwd",
    "--chdir=/",
    # SLURM filename patterns and backslashes (sbatch --output expands them)
    "%",
    "%%",
    "%j",
    "%x",
    "%u",
    "%5a",
    "%A_%a",
    "100%",
    "a%jb",
    "%j %A %x",
    "50%%off",
    "%N%n%t%s",
    "\\",
    "\\\\",
    "a\\b",
    "\\n",
    "\\%j",
    "trailing\\",
    "%\\j",
    # quotes and shell syntax
    "'",
    '"',
    "''",
    "'\"'",
    "a'b",
    'a"b',
    "\\'",
    "$'\\x41'",
    '$"x"',
    "$",
    "#",
    "$HOME",
    "${PATH}",
    "$((6*7))",
    "!!",
    "!-1",
    "*",
    "?",
    "[a-z]*",
    "{a,b}",
    "~",
    "~root",
    "> CANARY",
    ">> CANARY",
    "< /etc/passwd",
    "2>&1",
    "a b",
    "  leading",
    "trailing  ",
    " ",
    "",
    # paths
    "..",
    "../",
    "../../../etc/passwd",
    "/",
    ".",
    "a/../b",
    "//x",
    "/etc/passwd",
    "a::/dataset",
    # control characters and Unicode
    "\x7f",
    "\x85next",
    "\x9b31m",
    "\x1b[31mred\x1b[0m",
    "\u2028",
    "\u2029",
    "\u202eevil",
    "\ufeffbom",
    "\ud800",
    "a\udfffb",
    "ünïcödé",
    "日本語のファイル",
    "emoji 🙂",
    "e\u0301",
    "\u00a0nbsp",
    "zero\u200bwidth",
    # template syntax and look-alike literals
    "{{ 7*7 }}",
    "{% raw %}",
    "{#",
    "${{7*7}}",
    "#{7*7}",
    "0",
    "-1",
    "1e9",
    "nan",
    "inf",
    "True",
    "None",
    "null",
    "[]",
    "{}",
    "0x10",
)


def hostile_values() -> list[str]:
    """The generated list (deduplicated, in a fixed order)."""
    values = [wrapper.replace("@", payload) for payload in PAYLOADS for wrapper in WRAPPERS]
    values += [payload.replace(" ", "${IFS}") for payload in PAYLOADS]
    values += FIXED
    values += [f"a{chr(code)}b" for code in range(32)]  # every C0 control character, NUL included
    limits = set(DEFAULT_MAX_LENGTH.values()) | {
        p.max_length for t in hpc.list_templates() for p in t.parameters.values() if p.max_length
    }
    values += ["x" * n for limit in sorted(limits) for n in (limit - 1, limit, limit + 1)] + [
        "y" * 100_000
    ]
    return list(dict.fromkeys(values))


HOSTILE = hostile_values()


def _values(canary: Path) -> list[str]:
    return [value.replace("CANARY", str(canary)) for value in HOSTILE]


def test_the_generated_list_covers_every_kind_of_hostile_value():
    assert len(HOSTILE) >= 200
    kinds = {
        "NUL": "\x00",
        "newline": "\n",
        "command substitution": "$(",
        "backtick": "`",
        "quote": "'",
        "percent": "%",
        "backslash": "\\",
        "non-ASCII": "ü",
        "line separator": "\u2028",
    }
    for kind, needle in kinds.items():
        assert any(needle in value for value in HOSTILE), kind
    assert any(value.startswith("-") for value in HOSTILE)
    assert max(map(len, HOSTILE)) > max(DEFAULT_MAX_LENGTH.values())


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A working directory with the inputs every template needs, and a canary path."""
    base = tmp_path / "work"
    base.mkdir()
    (base / "run.py").write_text("")
    for name in (
        "pred.tif",
        "gt.tif",
        "volume.tif",
        "images.tif",
        "labels.tif",
        "model",
        "section.tif",
    ):
        (base / name).write_bytes(b"")
    (base / "project").mkdir()
    monkeypatch.chdir(base)
    return base, tmp_path / "canary"


BASELINE = {
    "python-script": {"script": "run.py"},
    "score": {"pred": "pred.tif", "gt": "gt.tif"},
    "sun-train": {"images": "images.tif", "labels": "labels.tif"},
    "sun-predict": {"volume": "volume.tif", "model": "model"},
    "jupyter": {},
    "histology-match": {"volume": "volume.tif", "section": "section.tif"},
    "register": {"fixed": "volume.tif", "moving": "images.tif"},
    "quantify": {"labels": "labels.tif"},
    "denoise": {"input": "volume.tif"},
    "search": {"pipeline": "run.py", "image": "volume.tif", "truth": "gt.tif"},
    "pipeline": {"pipeline": "run.py", "input": "volume.tif"},
    "al-train": {"project": "project"},
    "al-simulate": {"pairs": "images.tif labels.tif", "test_pairs": "volume.tif gt.tif"},
    "compare": {"train_pairs": "images.tif labels.tif", "test_pairs": "volume.tif gt.tif"},
    "infer": {"model": "model", "image": "volume.tif"},
    "nnunet-train": {},
    "nnunet-predict": {"volume": "volume.tif", "model": "model"},
}


def test_every_template_is_swept():
    assert set(BASELINE) == {t.name for t in hpc.list_templates()}


def _allowed_options(template) -> set[str]:
    options = set()
    for source in template.sources.values():
        for line in source.splitlines():
            if line.startswith("#SBATCH --"):
                options.add(line.split()[1].split("=")[0])
    return options


def _assert_one_line(message: str, prefix: str) -> None:
    assert (
        "\n" not in message and "\r" not in message and "\x00" not in message and len(message) < 400
    ), repr(message)
    assert message.startswith(prefix), message


# A stand-in that records its name, working directory and arguments (NUL-separated) in
# the log named by $MDLMA_STUB_LOG. dash, not bash: it starts several times faster.
STUB = """#!/bin/sh
{ printf '%s\\0' "${0##*/}" "$PWD" "$#"; for a in "$@"; do printf '%s\\0' "$a"; done; } >> "$MDLMA_STUB_LOG"
"""
#: Commands the templates run (expected) and commands an injection would run (never).
STUBS = (
    "mdlma",
    "python",
    "batchspawner-singleuser",
    "sbatch",
    "srun",
    "scancel",
    "scontrol",
    "squeue",
    "salloc",
)
# Runs each script given as 'LOG SCRIPT' pairs in a subshell of one bash (a process per
# script costs about eight times as much) and prints each exit status.
DRIVER = """while [ $# -gt 0 ]; do
  ( export MDLMA_STUB_LOG="$1"; . "$2" ) </dev/null >/dev/null 2>>"$1.err"
  echo $?
  shift 2
done
"""


def _expected_call(name: str, step: str, v: dict) -> tuple[str, list[str]]:
    """The one command a template's script runs, with the arguments it must receive.

    This restates each template's command line (see the table in docs/slurm.md):
    every value must arrive verbatim as exactly one argument.
    """
    threads = str(v.get("cpus", ""))  # SLURM_CPUS_PER_TASK is unset here
    device = "cuda" if v.get("gpus") else "cpu"
    runtime = ["--device", device, "--threads", threads]
    if name == "python-script":
        return "python", [v["script"], *v["args"]]
    if name == "score":
        surface = ["--no-surface"] if v["no_surface"] else []
        return "mdlma", [
            "score",
            v["pred"],
            v["gt"],
            "--json",
            v["json_out"],
            *surface,
            *v["extra_args"],
        ]
    if name == "sun-train":
        return "mdlma", [
            "sun",
            "train",
            "--pair",
            v["images"],
            v["labels"],
            "--out",
            v["model"],
            "--axes",
            str(v["axes"]),
            "--steps",
            str(v["steps"]),
            "--batch-size",
            str(v["batch_size"]),
            *runtime,
            *v["extra_args"],
        ]
    if name == "sun-predict" and step == "merge":
        return "mdlma", ["sun", "merge", v["pieces_dir"], "--out", v["out"]]
    if name == "sun-predict":
        return "mdlma", [
            "sun",
            "predict",
            v["volume"],
            "--model",
            v["model"],
            "--out",
            v["out"],
            "--work-dir",
            v["pieces_dir"],
            "--axes",
            str(v["axes"]),
            "--slabs",
            str(v["slabs"]),
            "--piece-index",
            "0",
            *runtime,
            "--job-memory",
            "2048",  # SLURM_MEM_PER_NODE's default; the budget is (2048 - 1024) / 2
        ]
    if name == "nnunet-train":
        return "mdlma", [
            "nnunet",
            "train",
            "--id",
            str(v["dataset_id"]),
            "--configuration",
            v["configuration"],
            "--fold",
            str(v["fold"]),
            "--epochs",
            str(v["epochs"]),
            "--iterations",
            str(v["iterations"]),
            *runtime,
            *v["extra_args"],
        ]
    if name == "nnunet-predict":
        axes = [] if v["axes"] == "nnunet" else ["--axes", str(v["axes"])]
        return "mdlma", [
            "nnunet",
            "predict",
            v["volume"],
            "--model",
            v["model"],
            "--out",
            v["out"],
            *axes,
            *runtime,
            *v["extra_args"],
        ]
    if name == "histology-match":
        axis = {"z": ["1", "0", "0"], "y": ["0", "1", "0"], "x": ["0", "0", "1"]}.get(
            v["cutting_axis"]
        )
        prior = ["--axis", *axis, "--cone", str(v["cone"])] if axis else []
        return "mdlma", [
            "histology",
            "match",
            v["volume"],
            v["section"],
            "--out",
            v["out"],
            *prior,
            "--candidates",
            str(v["candidates"]),
            "--device",
            device,
            *v["extra_args"],
        ]
    if name == "register":
        if v["method"] == "affine":
            method_options = ["--kind", "rigid" if v["prealign"] == "rigid" else "affine"]
        else:
            method_options = ["--prealign", v["prealign"], "--device", device]
        optional = [
            *(["--model", v["model"]] if v["method"] == "voxelmorph" else []),
            *(["--bin", str(v["bin"])] if v["bin"] else []),
            *(["--fixed-labels", v["fixed_labels"]] if v["fixed_labels"] else []),
            *(["--moving-labels", v["moving_labels"]] if v["moving_labels"] else []),
            *(["--landmarks", v["landmarks"]] if v["landmarks"] else []),
        ]
        return "mdlma", [
            "register",
            v["method"],
            v["fixed"],
            v["moving"],
            "--out",
            v["out"],
            *method_options,
            *optional,
            *v["extra_args"],
        ]
    if name == "quantify":
        optional = [
            *(["--days", str(v["days"])] if v["days"] else []),
            *(["--cylinder"] if v["cylinder"] else []),
            *(
                ["--initial-radius", str(v["initial_radius"])]
                if v["cylinder"] and v["initial_radius"]
                else []
            ),
            *(["--uncertainty", v["uncertainty"]] if v["uncertainty"] else []),
        ]
        return "mdlma", [
            "quantify",
            v["labels"],
            "--out",
            v["out"],
            "--shell-width",
            str(v["shell_width"]),
            "--shells",
            str(v["shells"]),
            *optional,
            *v["extra_args"],
        ]
    if name == "denoise":
        params = [word for item in v["params"] for word in ("--param", item)]
        chunks = ["--chunks", str(v["chunks"])] if v["chunks"] else []
        return "mdlma", ["denoise", v["method"], v["input"], "--out", v["out"], *params, *chunks]
    if name == "search":
        return "mdlma", [
            "search",
            "run",
            v["pipeline"],
            "--study",
            v["study"],
            "--data",
            v["image"],
            v["truth"],
            "--trials",
            str(v["trials"]),
            "--sampler",
            v["sampler"],
            "--executor",
            "local",
            "--workers",
            str(v["cpus"]),
            *v["extra_args"],
        ]
    if name == "pipeline":
        return "mdlma", [
            "search",
            "apply",
            v["pipeline"],
            v["input"],
            "--out",
            v["out"],
            *v["extra_args"],
        ]
    if name == "al-train":
        steps = ["--max-steps", str(v["max_steps"])] if v["max_steps"] else []
        return "mdlma", [
            "al",
            "train",
            v["project"],
            *runtime,
            *steps,
            *v["extra_args"],
        ]
    if name == "al-simulate" and step == "merge":
        return "mdlma", ["al", "merge", v["out"]]
    if name == "al-simulate":
        return "mdlma", [
            "al",
            "simulate",
            "--pair",
            *v["pairs"],
            "--test-pair",
            *v["test_pairs"],
            "--out",
            v["out"],
            "--functions",
            *v["functions"],
            "--seeds",
            *[str(seed) for seed in range(v["seeds"])],
            "--network",
            v["network"],
            "--steps",
            str(v["steps"]),
            "--initial",
            str(v["initial"]),
            "--batch",
            str(v["batch"]),
            "--max-labelled",
            str(v["max_labelled"]),
            "--cell-index",
            "0",
            *runtime,
            *v["extra_args"],
        ]
    if name == "compare" and step == "merge":
        return "mdlma", ["compare", "--merge-only", "--out", v["out"]]
    if name == "compare":
        return "mdlma", [
            "compare",
            "--train",
            *v["train_pairs"],
            "--test",
            *v["test_pairs"],
            "--methods",
            *v["methods"],
            "--method-index",
            "0",
            "--out",
            v["out"],
            "--sun-steps",
            str(v["sun_steps"]),
            "--sun-input-size",
            str(v["sun_input_size"]),
            "--nnunet-epochs",
            str(v["nnunet_epochs"]),
            "--nnunet-iterations",
            str(v["nnunet_iterations"]),
            *runtime,
            *v["extra_args"],
        ]
    if name == "infer" and step == "merge":
        return "mdlma", [
            "infer",
            v["model"],
            v["image"],
            "--out",
            v["out"],
            "--work-dir",
            v["work_dir"],
            "--finish",
        ]
    if name == "infer":
        return "mdlma", [
            "infer",
            v["model"],
            v["image"],
            "--out",
            v["out"],
            "--work-dir",
            v["work_dir"],
            "--part",
            "0",
            "--parts",
            str(v["tasks"]),
            *runtime,
            *v["extra_args"],
        ]
    if name == "jupyter":
        port = [f"--port={v['port']}"] if v["port"] else []
        command, *args = v["command"]
        ip = [f"--ip={v['ip']}"] if v["ip"] else []  # empty: the hub's JUPYTERHUB_SERVICE_URL
        return command, [
            *args,
            *ip,
            *port,
            f"--notebook-dir={v['notebook_dir']}",
            *v["extra_args"],
        ]
    raise AssertionError(f"no expected command for template {name}")


def _creatable(value: str) -> bool:
    return (
        value not in {"", ".", ".."}
        and "/" not in value
        and "\x00" not in value
        and len(value.encode("utf-8", "surrogatepass")) < 200
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    )


def _candidate(p, value: str, base: Path, inputs) -> str:
    """The hostile value, or for an existing-path parameter a file/folder named by it.

    A folder also holds ``inputs`` (the baseline's relative paths): it may become the
    working directory.
    """
    if p.type == "path" and p.exists and _creatable(value):
        target = base / ("dirs" if p.kind == "dir" else "files") / value
        if p.kind == "dir" and not target.exists():
            target.mkdir(parents=True)
            for name in inputs:
                (target / name).touch()
        elif not target.exists():
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


def _stub_dir(folder: Path, names) -> Path:
    folder.mkdir(parents=True)
    for stub in names:
        (folder / stub).write_text(STUB)
        (folder / stub).chmod(0o755)
    return folder


def _assert_inert(template, jobs, allowed: set[str], context: tuple) -> None:
    """Rendering kept exactly the template's own directives, each a plain word."""
    for job in jobs:
        budget = sum(
            line.startswith("#SBATCH") for line in template.sources[job.script_name].splitlines()
        )
        assert len(job.directives) <= budget, context
        for line in job.directives:
            assert SBATCH_LINE_RE.fullmatch(line), (*context, line)
            assert line.split()[1].split("=")[0] in allowed, (*context, line)
        assert "\x00" not in job.text


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_hostile_values_are_refused_or_passed_on_literally(name, sandbox, tmp_path):
    base, canary = sandbox
    template = hpc.load_template(name)
    allowed = _allowed_options(template)
    # A fake install prefix whose venv/bin holds the stand-ins, which the scripts put
    # first on PATH; the SLURM stand-ins are first on the PATH they start with. Lmod is
    # kept out of the way with a module function that always fails, so the script
    # takes its fallback.
    prefix = tmp_path / "prefix"
    _stub_dir(prefix / "venv" / "bin", STUBS)
    slurm_stubs = _stub_dir(tmp_path / "slurm-stubs", STUBS)
    config = load_config()
    config["slurm"] = {
        **config["slurm"],
        "prefix": str(prefix),
        "modulepath": str(tmp_path / "nomodules"),
    }
    context = hpc.jobs.script_context(template, config)
    env = {
        "PATH": f"{slurm_stubs}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BASH_FUNC_module%%": "() { return 1; }",
        "SLURM_ARRAY_TASK_ID": "0",
    }
    runs = tmp_path / "runs"
    runs.mkdir()
    jobs = []  # (value, validated values, step, script, log)
    rejected = 0
    for index, value in enumerate(_values(canary)):
        # Each parameter alone: refused on one line, or rendered inert.
        accepted: dict[str, object] = {}
        for pname, p in template.parameters.items():
            candidate = _candidate(p, value, base, BASELINE[name].values())
            try:
                alone = hpc.validate_params(
                    template, {**BASELINE[name], pname: candidate}, cwd=base
                )
            except InputError as exc:
                _assert_one_line(str(exc), f"{name}: ")
                rejected += 1
                continue
            _assert_inert(template, hpc.render(template, alone, context), allowed, (pname, value))
            if p.type == "module":
                # Rendered and checked inert, but not run: running needs Lmod and a module of
                # that name (the hub's end-to-end test runs a real one).
                continue
            accepted[pname] = candidate
        if not accepted:
            continue
        # Then all that accept it at once. Parameters that only work alone (a workdir
        # changes where relative paths point) are tried together; if they clash, the
        # workdir goes back to its default.
        try:
            values = hpc.validate_params(template, {**BASELINE[name], **accepted}, cwd=base)
        except InputError:
            accepted.pop("workdir", None)
            values = hpc.validate_params(template, {**BASELINE[name], **accepted}, cwd=base)
        for job in hpc.render(template, values, context):
            script = runs / f"{index}-{job.step}.sh"
            script.write_text(job.text, encoding="utf-8", errors="surrogateescape")
            jobs.append((value, values, job.step, script, runs / f"{index}-{job.step}.log"))
    # Both outcomes occur: strict fields refuse, free text and paths are quoted.
    assert rejected >= 1000 and len(jobs) >= 100
    argv = ["bash", "-c", DRIVER, "driver"] + [
        str(item) for *_, script, log in jobs for item in (log, script)
    ]
    proc = subprocess.run(argv, env=env, cwd=base, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = proc.stdout.split()
    assert len(statuses) == len(jobs)
    assert not canary.exists(), f"{name}: a hostile value ran a command"
    for (value, values, step, _script, log), status in zip(jobs, statuses):
        errors = log.with_name(log.name + ".err")
        assert status == "0", (value, errors.read_text(errors="replace")[-500:])
        command, arguments = _expected_call(name, step, values)
        assert _read_calls(log) == [(command, values["workdir"], arguments)], (name, step, value)


def _slurm_expands(pattern: str, job_id: str, workdir: str) -> str:
    """A file name as SLURM makes it from an ``--output`` pattern (``man sbatch``, "filename pattern").

    A relative pattern is put after the working directory first (as SLURM 22.05 does:
    tried on the test cluster). A backslash turns every replacement off and is
    removed; otherwise ``%%`` is ``%``, ``%j`` the job id and any other
    ``%[digits]letter`` something else (marked here).
    """
    if not pattern.startswith("/"):
        pattern = f"{workdir}/{pattern}"
    if "\\" in pattern:
        return pattern.replace("\\", "")
    return re.sub(
        r"%(%|\d*[A-Za-z])",
        lambda m: "%" if m[1] == "%" else job_id if m[1] == "j" else f"<{m[1]}>",
        pattern,
    )


def test_working_folders_reach_sbatch_literally(sandbox, tmp_path, monkeypatch):
    base, canary = sandbox
    stubs = _stub_dir(tmp_path / "stubs", ())
    (stubs / "sbatch").write_text(STUB + "echo 4242\n")
    (stubs / "squeue").write_text("#!/bin/sh\n")
    for stub in ("sbatch", "squeue"):
        (stubs / stub).chmod(0o755)
    log = tmp_path / "sbatch.log"
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    monkeypatch.setenv("MDLMA_STUB_LOG", str(log))
    submitted = refused = 0
    for value in filter(_creatable, _values(canary)):
        folder = base / "dirs" / value
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.py").touch()
        params = {"script": "run.py", "workdir": str(folder)}
        try:
            prepared = hpc.prepare("python-script", params, backend="slurm", check_cluster=False)
        except InputError as exc:
            _assert_one_line(str(exc), "python-script: workdir: ")
            assert "control character" in str(exc) or ("\\" in value and "backslash" in str(exc)), (
                value,
                exc,
            )
            refused += "backslash" in str(exc)
            continue
        log.unlink(missing_ok=True)
        record = hpc.submit(prepared)
        ((command, _cwd, argv),) = _read_calls(log)
        assert command == "sbatch" and argv[0] == f"--chdir={folder}", (value, argv)
        assert argv[1].startswith("--output=") and argv[-1] == str(Path(record.path) / "job.sh")
        assert (
            _slurm_expands(argv[1].removeprefix("--output="), "4242", str(folder))
            == f"{record.path}/slurm-4242.out"
        ), value
        submitted += 1
    assert submitted >= 60 and refused >= 5
    assert not canary.exists()


def test_escaping_matters_for_slurms_filename_patterns():
    """The model above is not vacuous: an unescaped folder with '%' names another file."""
    assert _slurm_expands("slurm-%j.out", "7", "/a%jb") == "/a7b/slurm-7.out"
    assert _slurm_expands("slurm-%j.out", "7", "/c\\d") == "/cd/slurm-%j.out"
    escaped = hpc.slurm.escape_filename_pattern("/a%jb%%") + "/slurm-%j.out"
    assert _slurm_expands(escaped, "7", "/elsewhere") == "/a%jb%%/slurm-7.out"


@pytest.mark.parametrize(
    ("check", "pattern"), [(check_partition, SLURM_WORD_RE), (check_module, None)]
)
def test_hub_validators_return_clean_values_or_refuse(check, pattern):
    """The validators the hub's spawn form uses: what they return is safe to pass on as is."""
    field = check.__name__.removeprefix("check_")
    for value in [
        *HOSTILE,
        " debug ",
        "debug\n",
        "\tdebug",
        "mdlma/unified-framework",
        "python/3.11.4-GCC+x",
    ]:
        try:
            cleaned = check(value)
        except InputError as exc:
            _assert_one_line(str(exc), f"{field}: ")
            continue
        assert (
            cleaned == value.strip(" ")
            and cleaned.isascii()
            and cleaned.isprintable()
            and " " not in cleaned
        )
        if pattern is not None and cleaned:
            assert pattern.fullmatch(cleaned)
    assert (
        check_partition(" debug ") == "debug"
        and check_module(" mdlma/unified-framework") == "mdlma/unified-framework"
    )
    for bad in ("debug\n", "debug\r", "\x00debug", "de\u2028bug"):
        with pytest.raises(InputError, match="control character"):
            check(bad)
    with pytest.raises(InputError, match="not a module name"):
        check_module("../../etc/passwd")
