"""The spawn options a user may choose, and their validation.

The same :func:`validate_options` checks the options form and options sent to the
REST API (``POST /hub/api/users/<name>/server`` with a JSON body bypasses the form),
so a job script is only ever rendered from values the cluster really offers. Text goes
through the SLURM layer's :func:`~unified_framework.hpc.validation.check_text` (no
control characters, bounded length) and is never stripped: the value checked is the
value the job script gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..hpc.slurm import Partition, format_minutes
from ..hpc.validation import check_module, check_partition, check_text

#: Run times offered (minutes); each partition shows those within its limit.
RUNTIME_MINUTES = (30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080)
#: Memory sizes offered (GB); each partition shows those its largest node has.
MEMORY_GB = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class SpawnChoices:
    """Everything the options form offers, read from the cluster.

    Attributes
    ----------
    partitions : list of Partition
        Partitions that are up (:class:`unified_framework.hpc.Partition`, from ``sinfo``).
    modules : list of str
        Lmod module environments (``name/version``) that can run the server.
    defaults : dict
        Preselected form values: ``runtime_minutes``, ``cpus``, ``memory_gb``.
    """

    partitions: list[Partition]
    modules: list[str]
    defaults: Mapping[str, int] = field(
        default_factory=lambda: {"runtime_minutes": 60, "cpus": 1, "memory_gb": 2}
    )

    def partition(self, name: str) -> Partition:
        for part in self.partitions:
            if part.name == name:
                return part
        raise InputError(
            f"partition: expected one of {[p.name for p in self.partitions]}, got {name!r}"
        )

    @property
    def default_partition(self) -> Partition:
        return next((p for p in self.partitions if p.default), self.partitions[0])

    def runtimes(self, part: Partition) -> list[int]:
        return [
            m for m in RUNTIME_MINUTES if part.max_minutes is None or m <= part.max_minutes
        ] or [part.max_minutes or RUNTIME_MINUTES[0]]

    def memories(self, part: Partition) -> list[int]:
        return [g for g in MEMORY_GB if g * 1024 <= part.max_memory_mb_per_node] or [
            max(1, int(part.max_memory_mb_per_node) // 1024)
        ]


#: Longest text accepted for any option (module names are the longest real values).
MAX_OPTION_LENGTH = 256


def _scalar(raw: Mapping[str, Any], key: str, default: Any) -> str:
    """One value from form data (lists of strings) or a JSON body (scalars), as text."""
    value = raw.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InputError(f"{key}: expected one value, got {len(value)}")
        value = value[0]
    if value is None:
        raise InputError(f"{key}: a value is required")
    return check_text(value if isinstance(value, str) else str(value), key, MAX_OPTION_LENGTH)


def _integer(raw: Mapping[str, Any], key: str, default: Any, low: int, high: int) -> int:
    text = _scalar(raw, key, default)
    if not text.isdigit():
        raise InputError(f"{key}: expected a whole number from {low} to {high}, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise InputError(f"{key}: expected a whole number from {low} to {high}, got {value}")
    return value


def validate_options(raw: Mapping[str, Any], choices: SpawnChoices) -> dict[str, str]:
    """Check user options against the cluster and turn them into job-script values.

    Parameters
    ----------
    raw : mapping
        ``partition``, ``runtime_minutes``, ``cpus``, ``memory_gb``, ``gpus`` and
        ``module``; form data (lists) or scalars. Missing keys take the defaults.
    choices : SpawnChoices
        What the cluster offers.

    Returns
    -------
    dict
        ``partition``, ``runtime`` (``D-HH:MM:SS``), ``nprocs``, ``memory``
        (``<n>G``), ``gres`` (``gpu:<n>`` or empty) and ``module`` - the names the
        batch script template uses.

    Raises
    ------
    InputError
        Naming the field and what was expected.
    """
    unknown = sorted(
        set(raw) - {"partition", "runtime_minutes", "cpus", "memory_gb", "gpus", "module"}
    )
    if unknown:
        raise InputError(f"spawn options: unknown field(s) {unknown}")
    if not choices.modules:
        raise InputError("module: no module environment is configured for the hub")
    part = choices.partition(
        check_partition(_scalar(raw, "partition", choices.default_partition.name))
        or choices.default_partition.name
    )
    defaults = choices.defaults
    runtime = _integer(
        raw, "runtime_minutes", defaults["runtime_minutes"], 1, part.max_minutes or 10**6
    )
    cpus = _integer(
        raw, "cpus", min(defaults["cpus"], part.max_cpus_per_node), 1, part.max_cpus_per_node
    )
    memory_gb = _integer(
        raw,
        "memory_gb",
        min(defaults["memory_gb"], max(choices.memories(part))),
        1,
        max(1, int(part.max_memory_mb_per_node) // 1024),
    )
    gpus = _integer(raw, "gpus", 0, 0, part.max_gpus_per_node)
    module = check_module(_scalar(raw, "module", choices.modules[0]))
    if module not in choices.modules:
        raise InputError(f"module: expected one of {choices.modules}, got {module[:80]!r}")
    return {
        "partition": part.name,
        "runtime": format_minutes(runtime),
        "nprocs": str(cpus),
        "memory": f"{memory_gb}G",
        "gres": f"gpu:{gpus}" if gpus else "",
        "module": module,
    }
