"""Job templates: one self-describing folder per workflow under ``slurm_templates/``.

A template folder holds ``form.yml`` (the parameters), ``script.sh.j2`` (the batch
script; more scripts for templates that submit several dependent jobs) and a
``README.md``. ``form.yml``::

    title: Python script
    description: Run your own Python script in the MDLMA module environment.
    jobs:                       # optional; default: one job from script.sh.j2
      - {name: predict, script: script.sh.j2}
      - {name: merge, script: merge.sh.j2, after: predict}   # afterok dependency
    resources:                  # the shared resource parameters; only what differs
      mem: {default: 2G}
      partition: {locked: true}
      gpus: false               # this template has no GPU parameter
    parameters:                 # the template's own parameters
      script: {type: path, kind: file, required: true, default: "", help: The script.}

The resource parameters (``job_name``, ``workdir``, ``cpus``, ``mem``, ``time``,
``gpus``, ``partition``, ``account``, ``qos``) are declared once, in
``_shared/resources.yml`` (:data:`SHARED_FOLDER`), and printed by
``_shared/resources.sh.j2``; a form with a ``resources:`` section takes them from
there. A form without one declares every parameter itself (a site's older templates),
and must then declare at least ``job_name`` and ``workdir``.

Parameter types and their keys are described in ``docs/slurm.md``; every parameter has
``type``, ``default`` and ``help``, and may be ``locked`` (fixed by the administrator)
or ``required``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import BackendUnavailable, InputError
from ..shipped import shipped_dir
from .settings import HpcSettings

#: Parameter types understood by :mod:`.validation`.
PARAMETER_TYPES = frozenset(
    {
        "name",
        "string",
        "args",
        "int",
        "float",
        "bool",
        "choice",
        "path",
        "partition",
        "qos",
        "account",
        "time",
        "memory",
        "cpus",
        "gpus",
        "array",
        "host",
        "module",
    }
)
_PARAMETER_KEYS = frozenset(
    {
        "type",
        "default",
        "help",
        "label",
        "locked",
        "required",
        "min",
        "max",
        "choices",
        "max_length",
        "exists",
        "kind",
        "access",
        "pattern",
        "dataset",
    }
)
#: Every template must have these parameters: the library relies on them.
REQUIRED_PARAMETERS = ("job_name", "workdir")
#: The folder beside the templates with the shared parts: resources.yml, resources.sh.j2, environment.sh.j2.
SHARED_FOLDER = "_shared"
RESOURCES_FILE = "resources.yml"
_INCLUDE_RE = re.compile(r"""\{%-?\s*include\s+["']([^"']+)["']\s*-?%\}""")


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
            parts.append(
                f"{'' if self.min is None else self.min}..{'' if self.max is None else self.max}"
            )
        if self.type == "path":
            parts.append(
                ("existing " if self.exists else "new or existing ")
                + (self.kind if self.kind != "any" else "path")
            )
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
    #: Each job script's text, with every included shared file that prints ``#SBATCH``
    #: lines (``resources.sh.j2``) written out in place of its ``{% include %}``: every
    #: directive a script can print is visible here (the renderer's directive check).
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    def defaults(self) -> dict[str, Any]:
        """The default value of every parameter."""
        return {name: p.default for name, p in self.parameters.items()}


def templates_dir(config: HpcSettings | Mapping[str, Any] | None = None) -> Path:
    """Folder holding the template folders.

    ``slurm.templates_dir`` in the configuration (``MDLMA_SLURM_TEMPLATES_DIR``) if set,
    else the ``slurm_templates/`` folder of the installation
    (:func:`unified_framework.shipped.shipped_dir`: the clone's, or the wheel's data files).

    Examples
    --------
    >>> (templates_dir({"slurm": {}}) / "python-script" / "form.yml").is_file()
    True
    """
    configured = HpcSettings.of(config).templates_dir
    return Path(configured).expanduser() if configured else shipped_dir("slurm_templates")


def shared_folders(template_folder: Path) -> list[Path]:
    """Where a template's scripts find shared files, first match wins.

    The ``_shared`` folder beside the template (a site's templates folder may bring its
    own), then the one shipped with the framework.
    """
    folders = [template_folder.parent / SHARED_FOLDER]
    try:
        folders.append(shipped_dir("slurm_templates") / SHARED_FOLDER)
    except BackendUnavailable:  # a site's templates_dir can bring everything itself
        pass
    return [f for f in dict.fromkeys(p.resolve() for p in folders) if f.is_dir()]


def list_templates(root: str | os.PathLike | None = None) -> list[Template]:
    """Load every template folder (a folder with a ``form.yml``) under ``root``, by name."""
    root = Path(root) if root is not None else templates_dir()
    if not root.is_dir():
        raise InputError(f"{root}: template folder not found (set slurm.templates_dir)")
    return [load_template(p) for p in sorted(root.iterdir()) if (p / "form.yml").is_file()]


#: libyaml's parser where PyYAML has it: the dashboard reads every template's form on each
#: page run, and PyYAML's pure-Python parser took most of that time.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 (safe loader)


def load_template(
    name_or_path: str | os.PathLike, root: str | os.PathLike | None = None
) -> Template:
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
        known = (
            sorted(p.name for p in root.iterdir() if (p / "form.yml").is_file())
            if root.is_dir()
            else []
        )
        raise InputError(
            f"template {text!r}: not found; expected one of {', '.join(known) or '(none)'}"
        )
    try:
        spec = _read_yaml(form) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{form}: not valid YAML ({' '.join(str(exc).split())})") from None
    if isinstance(spec, dict) and "resources" in spec and spec.get("parameters") is None:
        spec["parameters"] = {}  # a template with the shared resources and nothing of its own
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise InputError(f"{form}: expected a mapping with a 'parameters' mapping")
    shared = shared_folders(path)
    entries = dict(spec["parameters"])
    if "resources" in spec:
        entries = _with_resources(form, path.name, spec["resources"], entries, shared)
    parameters = {name: _parameter(form, name, entry) for name, entry in entries.items()}
    for name in REQUIRED_PARAMETERS:
        if name not in parameters:
            raise InputError(f"{form}: parameter {name!r} is required in every template")
    steps = tuple(_steps(form, spec.get("jobs")))
    sources = {}
    for step in steps:
        script = path / step.script
        if not script.is_file():
            raise InputError(f"{form}: job {step.name!r} names {step.script}, which does not exist")
        # Looked up as the renderer's loader does: the template's folder, then the shared ones.
        sources[step.script] = _with_shared_directives(
            script.read_text(encoding="utf-8"), [path, *shared]
        )
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


def _with_shared_directives(source: str, folders: list[Path]) -> str:
    """``source`` with each included file (first found in ``folders``) that holds ``#SBATCH`` lines written out."""

    def expand(match: re.Match[str]) -> str:
        found = next((f / match.group(1) for f in folders if (f / match.group(1)).is_file()), None)
        text = found.read_text(encoding="utf-8") if found is not None else ""
        return text.rstrip("\n") if "\n#SBATCH" in "\n" + text else match.group(0)

    return _INCLUDE_RE.sub(expand, source)


def _with_resources(
    form: Path, template_name: str, resources: Any, own: dict[str, Any], shared: list[Path]
) -> dict:
    """The form's parameters with the shared resource parameters, changed as ``resources:`` says.

    Order: ``job_name`` and ``workdir``, the template's own parameters, then the other
    resources in the order of ``resources.yml``.
    """
    source = next((f / RESOURCES_FILE for f in shared if (f / RESOURCES_FILE).is_file()), None)
    if source is None:
        raise InputError(
            f"{form}: 'resources' needs {SHARED_FOLDER}/{RESOURCES_FILE}, which was not found"
        )
    try:
        declared = (_read_yaml(source) or {}).get("parameters")
    except (yaml.YAMLError, AttributeError):
        declared = None
    if not isinstance(declared, dict):
        raise InputError(f"{source}: expected a mapping with a 'parameters' mapping")
    if resources is None:
        resources = {}
    if not isinstance(resources, dict):
        raise InputError(
            f"{form}: 'resources' must map resource names to changed keys (or false to leave one out)"
        )
    unknown = sorted(set(resources) - set(declared))
    if unknown:
        raise InputError(
            f"{form}: resources: {unknown[0]!r} is not a shared resource; expected one of {', '.join(declared)}"
        )
    twice = sorted(set(own) & set(declared))
    if twice:
        raise InputError(
            f"{form}: parameter {twice[0]!r} is a shared resource; change it under 'resources:' instead"
        )
    merged: dict[str, Any] = {}
    for name, entry in declared.items():
        change = resources.get(name, {})
        if change is False and name not in REQUIRED_PARAMETERS:
            continue
        if not isinstance(change, dict):
            raise InputError(
                f"{form}: resources: {name!r} must be a mapping of changed keys"
                + ("" if name in REQUIRED_PARAMETERS else " or false")
            )
        merged[name] = {**entry, **change}
    if not merged["job_name"].get("default") and "default" not in resources.get("job_name", {}):
        merged["job_name"]["default"] = template_name
    first = {name: merged.pop(name) for name in REQUIRED_PARAMETERS}
    return {**first, **own, **merged}


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
            raise InputError(
                f"{form}: job {entry['name']!r} waits for {after!r}, which is not an earlier job"
            )
        steps.append(JobStep(str(entry["name"]), str(entry["script"]), after))
    return steps
