"""Job templates: one self-describing folder per workflow under ``slurm_templates/``.

A template folder holds ``form.yml`` (the parameters), ``script.sh.j2`` (the batch
script; more scripts for templates that submit several dependent jobs) and a
``README.md``. ``form.yml``::

    title: Python script
    description: Run your own Python script in the MDLMA module environment.
    jobs:                       # optional; default: one job from script.sh.j2
      - {name: predict, script: script.sh.j2}
      - {name: merge, script: merge.sh.j2, after: predict}   # afterok dependency
    parameters:
      job_name: {type: name, default: python-script, help: Name shown in the queue.}
      cpus: {type: int, default: 1, min: 1, max: 64, help: CPU cores.}
      partition: {type: partition, default: "", locked: true, help: ...}

Parameter types and their keys are described in ``docs/slurm.md``; every parameter has
``type``, ``default`` and ``help``, and may be ``locked`` (fixed by the administrator)
or ``required``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import load_config
from ..errors import InputError

#: Parameter types understood by :mod:`.validation`.
PARAMETER_TYPES = frozenset(
    {
        "name", "string", "args", "int", "float", "bool", "choice", "path",
        "partition", "qos", "account", "time", "memory", "cpus", "gpus", "array", "host",
    }
)
_PARAMETER_KEYS = frozenset(
    {
        "type", "default", "help", "label", "locked", "required", "min", "max", "choices",
        "max_length", "exists", "kind", "access", "pattern", "dataset",
    }
)
#: Every template must have these parameters: the library relies on them.
REQUIRED_PARAMETERS = ("job_name", "workdir")
_REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "slurm_templates"


@dataclass(frozen=True)
class Parameter:
    """One entry of ``form.yml``'s ``parameters`` section."""

    name: str
    type: str
    default: Any
    help: str
    label: str = ""
    locked: bool = False
    required: bool = False
    min: Any = None
    max: Any = None
    choices: tuple = ()
    max_length: int | None = None
    exists: bool = True
    kind: str = "any"
    access: str = "r"
    pattern: str | None = None
    #: A path parameter that takes a catalogued dataset (the catalogue page's "use in job composer").
    dataset: bool = False

    def describe(self) -> str:
        """A short human description of the allowed values (for forms and ``--help``)."""
        parts = [self.type]
        if self.choices:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        if self.min is not None or self.max is not None:
            parts.append(f"{'' if self.min is None else self.min}..{'' if self.max is None else self.max}")
        if self.type == "path":
            parts.append(("existing " if self.exists else "new or existing ") + (self.kind if self.kind != "any" else "path"))
        if self.locked:
            parts.append("locked")
        return ", ".join(parts)


@dataclass(frozen=True)
class JobStep:
    """One batch job of a template; ``after`` names the step it waits for (afterok)."""

    name: str
    script: str
    after: str | None = None


@dataclass(frozen=True)
class Template:
    """A loaded template folder."""

    name: str
    path: Path
    title: str
    description: str
    parameters: dict[str, Parameter]
    steps: tuple[JobStep, ...]
    readme: str = ""
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    def defaults(self) -> dict[str, Any]:
        """The default value of every parameter."""
        return {name: p.default for name, p in self.parameters.items()}


def templates_dir(config: Mapping[str, Any] | None = None) -> Path:
    """Folder holding the template folders.

    ``slurm.templates_dir`` in the configuration (``MDLMA_SLURM_TEMPLATES_DIR``) if set,
    else the ``slurm_templates/`` folder of the source tree.
    """
    if config is None:
        config = load_config()
    configured = (config.get("slurm") or {}).get("templates_dir")
    return Path(configured).expanduser() if configured else _REPO_TEMPLATES


def list_templates(root: str | os.PathLike | None = None) -> list[Template]:
    """Load every template folder (a folder with a ``form.yml``) under ``root``, by name."""
    root = Path(root) if root is not None else templates_dir()
    if not root.is_dir():
        raise InputError(f"{root}: template folder not found (set slurm.templates_dir)")
    return [load_template(p) for p in sorted(root.iterdir()) if (p / "form.yml").is_file()]


def load_template(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Template:
    """Load a template by name (a folder under ``root``) or by folder path.

    Raises
    ------
    InputError
        Unknown template, or a ``form.yml`` that does not follow the schema.
    """
    text = str(name_or_path)
    root = Path(root) if root is not None else templates_dir()
    if os.sep in text or text.startswith("."):
        path = Path(text)
    else:
        path = root / text
    form = path / "form.yml"
    if not form.is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "form.yml").is_file()) if root.is_dir() else []
        raise InputError(f"template {text!r}: not found; expected one of {', '.join(known) or '(none)'}")
    try:
        spec = yaml.safe_load(form.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{form}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise InputError(f"{form}: expected a mapping with a 'parameters' mapping")
    parameters = {name: _parameter(form, name, entry) for name, entry in spec["parameters"].items()}
    for name in REQUIRED_PARAMETERS:
        if name not in parameters:
            raise InputError(f"{form}: parameter {name!r} is required in every template")
    steps = tuple(_steps(form, spec.get("jobs")))
    sources = {}
    for step in steps:
        script = path / step.script
        if not script.is_file():
            raise InputError(f"{form}: job {step.name!r} names {step.script}, which does not exist")
        sources[step.script] = script.read_text(encoding="utf-8")
    readme = path / "README.md"
    return Template(
        name=path.name,
        path=path.resolve(),
        title=str(spec.get("title") or path.name),
        description=" ".join(str(spec.get("description") or "").split()),
        parameters=parameters,
        steps=steps,
        readme=readme.read_text(encoding="utf-8") if readme.is_file() else "",
        sources=sources,
    )


def _parameter(form: Path, name: Any, entry: Any) -> Parameter:
    where = f"{form}: parameter {name!r}"
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"{where}: names must be Python identifiers")
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping with type, default and help")
    unknown = set(entry) - _PARAMETER_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}")
    if entry.get("type") not in PARAMETER_TYPES:
        raise InputError(f"{where}: type must be one of {sorted(PARAMETER_TYPES)}")
    if "default" not in entry or not entry.get("help"):
        raise InputError(f"{where}: needs a default and a help text")
    if entry["type"] == "choice" and not entry.get("choices"):
        raise InputError(f"{where}: a choice needs 'choices'")
    if entry.get("kind", "any") not in {"any", "file", "dir"}:
        raise InputError(f"{where}: kind must be any, file or dir")
    if not set(str(entry.get("access", "r"))) <= set("rwx"):
        raise InputError(f"{where}: access must be letters of 'rwx'")
    if entry.get("dataset") and entry["type"] != "path":
        raise InputError(f"{where}: only a path parameter can take a dataset")
    return Parameter(
        name=name,
        type=entry["type"],
        default=entry["default"],
        help=" ".join(str(entry["help"]).split()),
        label=str(entry.get("label") or name.replace("_", " ")),
        locked=bool(entry.get("locked", False)),
        required=bool(entry.get("required", False)),
        min=entry.get("min"),
        max=entry.get("max"),
        choices=tuple(entry.get("choices") or ()),
        max_length=entry.get("max_length"),
        exists=bool(entry.get("exists", True)),
        kind=entry.get("kind", "any"),
        access=str(entry.get("access", "r")),
        pattern=entry.get("pattern"),
        dataset=bool(entry.get("dataset", False)),
    )


def _steps(form: Path, jobs: Any) -> list[JobStep]:
    if jobs is None:
        return [JobStep("main", "script.sh.j2")]
    if not isinstance(jobs, list) or not jobs:
        raise InputError(f"{form}: 'jobs' must be a non-empty list")
    steps: list[JobStep] = []
    for entry in jobs:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("script"):
            raise InputError(f"{form}: every job needs a name and a script")
        after = entry.get("after")
        if after is not None and after not in {s.name for s in steps}:
            raise InputError(f"{form}: job {entry['name']!r} waits for {after!r}, which is not an earlier job")
        steps.append(JobStep(str(entry["name"]), str(entry["script"]), after))
    return steps
