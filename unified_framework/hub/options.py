"""The hub's options form: what it offers, and how its fields become a job of the
``jupyter`` template (``slurm_templates/jupyter``).

A spawn is a job like any other: the form's fields (``partition``,
``runtime_minutes``, ``cpus``, ``memory_gb``, ``gpus``, ``module``) are turned into the
template's parameters (``partition``, ``time``, ``cpus``, ``mem``, ``gpus``, ``module``)
and checked by the one validator of every job,
:func:`unified_framework.hpc.validate_params`, against the template's limits and the
cluster's (:class:`~unified_framework.hpc.ClusterLimits`, read with ``sinfo``). The
same :func:`validate_options` checks the options form and options sent to the REST API
(``POST /hub/api/users/<name>/server`` with a JSON body bypasses the form), so a job
script is only ever rendered from values the cluster really offers. Text is never
stripped before it is checked: the value checked is the value the job script gets.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..hpc.slurm import Partition, format_minutes, parse_duration, parse_memory_mb
from ..hpc.templates import Template, load_template
from ..hpc.validation import ClusterLimits, check_text, validate_params

#: The job template of every single-user server.
TEMPLATE = "jupyter"
#: Form field -> parameter of the ``jupyter`` template.
FORM_FIELDS = {
    "partition": "partition",
    "runtime_minutes": "time",
    "cpus": "cpus",
    "memory_gb": "mem",
    "gpus": "gpus",
    "module": "module",
}
#: Run times offered (minutes); each partition shows those within its and the template's limit.
RUNTIME_MINUTES = (30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080)
#: Memory sizes offered (GB); each partition shows those its largest node has.
MEMORY_GB = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Longest text accepted for any option (module names are the longest real values).
MAX_OPTION_LENGTH = 256


def jupyter_template(modules: list[str] | tuple[str, ...] = ()) -> Template:
    """The ``jupyter`` template, its ``module`` parameter narrowed to ``modules``."""
    template = load_template(TEMPLATE)
    if not modules:
        return template
    parameters = dict(template.parameters)
    parameters["module"] = dataclasses.replace(parameters["module"], choices=tuple(modules))
    return dataclasses.replace(template, parameters=parameters)


@dataclass(frozen=True)
class SpawnChoices:
    """Everything the options form offers, read from the cluster and the template.

    Attributes
    ----------
    cluster : ClusterLimits
        The cluster's partitions and QoS (:func:`unified_framework.hpc.cluster_limits`).
    modules : list of str
        Lmod module environments (``name/version``) that can run the server.
    defaults : dict
        Preselected form values: ``runtime_minutes``, ``cpus``, ``memory_gb``.
    """

    cluster: ClusterLimits
    modules: list[str]
    defaults: Mapping[str, int] = field(
        default_factory=lambda: {"runtime_minutes": 60, "cpus": 1, "memory_gb": 2}
    )

    @functools.cached_property
    def template(self) -> Template:
        """The ``jupyter`` template with this hub's module choices."""
        return jupyter_template(self.modules)

    @property
    def partitions(self) -> list[Partition]:
        """Partitions that are up."""
        return [p for p in self.cluster.partitions.values() if p.available]

    def partition(self, name: str) -> Partition:
        """The partition ``name`` if it is up (:class:`InputError` otherwise)."""
        for part in self.partitions:
            if part.name == name:
                return part
        raise InputError(
            f"partition: expected one of {[p.name for p in self.partitions]}, got {name!r}",
            field="partition",
        )

    @property
    def default_partition(self) -> Partition:
        """The cluster's default partition, else the first that is up."""
        return next((p for p in self.partitions if p.default), self.partitions[0])

    def _limit(self, name: str) -> Any:
        return self.template.parameters[name].max

    def max_minutes(self, part: Partition) -> int | None:
        """Longest run time of a server in ``part`` (its limit and the template's)."""
        limits = [m for m in (part.max_minutes,) if m is not None]
        if self._limit("time") is not None:
            limits.append(int((parse_duration(str(self._limit("time"))) or 0) // 60))
        return min(limits) if limits else None

    def cpus(self, part: Partition) -> int:
        """Most CPUs a server in ``part`` may have (its largest node, the template's maximum)."""
        return min(part.max_cpus_per_node, self._limit("cpus") or part.max_cpus_per_node)

    def gpus(self, part: Partition) -> int:
        """Most GPUs a server in ``part`` may have (its best node, the template's maximum)."""
        limit = self._limit("gpus") if "gpus" in self.template.parameters else 0
        return min(part.max_gpus_per_node, part.max_gpus_per_node if limit is None else limit)

    def memory_mb(self, part: Partition) -> float:
        """Most memory (MB) a server in ``part`` may have (its largest node, the template's maximum)."""
        limit = parse_memory_mb(str(self._limit("mem") or "").upper().rstrip("B"))
        return min(part.max_memory_mb_per_node, limit or part.max_memory_mb_per_node)

    def runtimes(self, part: Partition) -> list[int]:
        """The run times (minutes) the form offers for ``part``."""
        limit = self.max_minutes(part)
        return [m for m in RUNTIME_MINUTES if limit is None or m <= limit] or [
            limit or RUNTIME_MINUTES[0]
        ]

    def memories(self, part: Partition) -> list[int]:
        """The memory sizes (GB) the form offers for ``part``."""
        return [g for g in MEMORY_GB if g * 1024 <= self.memory_mb(part)] or [
            max(1, int(self.memory_mb(part)) // 1024)
        ]


def _scalar(raw: Mapping[str, Any], key: str, default: Any) -> str:
    """One value from form data (lists of strings) or a JSON body (scalars), as text."""
    value = raw.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InputError(f"{key}: expected one value, got {len(value)}", field=key)
        value = value[0]
    if value is None:
        raise InputError(f"{key}: a value is required", field=key)
    return check_text(value if isinstance(value, str) else str(value), key, MAX_OPTION_LENGTH)


def _whole(raw: Mapping[str, Any], key: str, default: Any) -> int:
    # The form's numeric fields are whole numbers in the form's units (minutes, GB);
    # what range is allowed is the template's and the cluster's business.
    text = _scalar(raw, key, default)
    if not text.isdigit() or len(text) > 9:
        raise InputError(f"{key}: expected a whole number, got {text[:40]!r}", field=key)
    return int(text)


def form_values(raw: Mapping[str, Any], choices: SpawnChoices) -> dict[str, Any]:
    """The ``jupyter`` template's values for form data or a JSON body (not yet validated).

    Missing fields take the form's defaults; unknown fields are refused (a JSON body
    must not reach template parameters the form does not offer).
    """
    unknown = sorted(set(raw) - set(FORM_FIELDS))
    if unknown:
        raise InputError(f"spawn options: unknown field(s) {unknown}")
    if not choices.modules:
        raise InputError("module: no module environment is configured for the hub", field="module")
    part = choices.default_partition
    defaults = choices.defaults
    minutes = _whole(raw, "runtime_minutes", defaults["runtime_minutes"])
    return {
        "partition": _scalar(raw, "partition", part.name),
        "time": format_minutes(minutes) if minutes > 0 else "0",
        "cpus": _whole(raw, "cpus", min(defaults["cpus"], choices.cpus(part))),
        "mem": f"{_whole(raw, 'memory_gb', min(defaults['memory_gb'], max(choices.memories(part))))}G",
        "gpus": _whole(raw, "gpus", 0),
        "module": _scalar(raw, "module", choices.modules[0]),
    }


def _in_form_terms(error: InputError, template: Template) -> InputError:
    """The validator's error, naming the form's field instead of the template's parameter."""
    parameter = error.field or ""
    name = next((f for f, p in FORM_FIELDS.items() if p == parameter), parameter)
    message = str(error).removeprefix(f"{template.name}: ")
    for prefix in (f"{parameter}: ", f"{parameter} "):
        if parameter and message.startswith(prefix):
            message = message.removeprefix(prefix)
            break
    return InputError(f"{name}: {message}" if name else message, field=name or None)


def validate_options(
    raw: Mapping[str, Any], choices: SpawnChoices, hub_values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check user options against the template and the cluster: the job's parameters.

    Parameters
    ----------
    raw : mapping
        ``partition``, ``runtime_minutes``, ``cpus``, ``memory_gb``, ``gpus`` and
        ``module``; form data (lists) or scalars. Missing keys take the defaults.
    choices : SpawnChoices
        What the cluster offers.
    hub_values : mapping, optional
        The hub's own parameters of the template (``workdir``, ``job_name``, the locked
        ``command``, ``modulepaths``, ``lmod_init``, ...); the administrator's, so
        locked parameters may be set here.

    Returns
    -------
    dict
        Every parameter of the ``jupyter`` template, validated by
        :func:`unified_framework.hpc.validate_params` (what :func:`unified_framework.hpc.render`
        takes).

    Raises
    ------
    InputError
        Naming the form's field (``cpus: ...``) and what was expected; its ``field``
        is the form field.

    Examples
    --------
    >>> from unified_framework.hpc.slurm import Partition
    >>> debug = Partition("debug", True, True, "1:00:00", None, ["n1"], 2, 2, 2, 3900.0, 0, 0)
    >>> choices = SpawnChoices(ClusterLimits({"debug": debug}), ["mdlma/unified-framework/0.1.0"])
    >>> validate_options({"cpus": ["2"]}, choices)["cpus"]
    2
    >>> validate_options({"cpus": "3"}, choices)
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: cpus: 3 exceeds the 2 CPUs of a node in partition 'debug'
    """
    template = choices.template
    values = {**form_values(raw, choices), **dict(hub_values or {})}
    try:
        return validate_params(
            template,
            values,
            cluster=choices.cluster,
            allow_locked=hub_values is not None,
            # The root hub cannot judge the user's permissions; the job runs as the user.
            check_paths=False,
        )
    except InputError as exc:
        raise _in_form_terms(exc, template) from None
