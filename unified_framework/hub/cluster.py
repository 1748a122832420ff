"""What the SLURM cluster offers, read with ``sinfo``, and which Lmod modules exist.

These fill the choices of the hub's options form and are the ground truth its
validation checks against, so a spawn can only ask for what the cluster has.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, InputError

log = logging.getLogger(__name__)

#: ``sinfo`` output format parsed by :func:`parse_sinfo`: partition (``*`` marks the
#: default), time limit, CPUs per node, memory per node (MB), generic resources, state.
SINFO_FORMAT = "%P|%l|%c|%m|%G|%a"

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_GPU_RE = re.compile(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)")


@dataclass(frozen=True)
class Partition:
    """One SLURM partition, as large as its largest node.

    Attributes
    ----------
    name : str
        Partition name.
    default : bool
        Whether jobs go here when no partition is named.
    max_minutes : int or None
        Longest run time allowed, in minutes; ``None`` when unlimited.
    cpus : int
        CPUs of its largest node.
    memory_mb : int
        Memory of its largest node, in MB.
    gpus : int
        GPUs of its best-equipped node (0 when it has none).
    """

    name: str
    default: bool
    max_minutes: int | None
    cpus: int
    memory_mb: int
    gpus: int


def parse_time_limit(text: str) -> int | None:
    """Minutes in a SLURM time limit (``infinite``, ``MM``, ``HH:MM:SS``, ``D-HH:MM`` ...).

    Returns ``None`` for an unlimited partition.
    """
    text = text.strip()
    if text.lower() in {"infinite", "unlimited"}:
        return None
    match = _TIME_RE.match(text)
    if not match:
        raise InputError(f"sinfo time limit: expected [D-]HH:MM:SS or 'infinite', got {text!r}")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return int(days) * 1440 + hours * 60 + minutes + (seconds > 0)
    if third is not None:  # HH:MM:SS
        return int(first) * 60 + int(second) + (int(third) > 0)
    if second is not None:  # MM:SS
        return int(first) + (int(second) > 0)
    return int(first)  # MM


def format_minutes(minutes: int) -> str:
    """A SLURM ``--time`` value (``D-HH:MM:00``) for a number of minutes."""
    if minutes <= 0:
        raise InputError(f"runtime: expected a positive number of minutes, got {minutes}")
    days, rest = divmod(minutes, 1440)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def parse_gpus(gres: str) -> int:
    """Number of GPUs in a ``sinfo %G`` field such as ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    return sum(int(n) for n in _GPU_RE.findall(gres.strip()))


def _number(text: str) -> int:
    # Heterogeneous partitions print the smallest node followed by '+', e.g. "4+".
    return int(text.strip().rstrip("+") or 0)


def parse_sinfo(text: str) -> list[Partition]:
    """Partitions in ``sinfo -h -o SINFO_FORMAT`` output; partitions that are not up are left out.

    A partition with several node types has one line per type; the result keeps the
    largest values, in the order the partitions first appear.
    """
    found: dict[str, Partition] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 6:
            raise InputError(
                f"sinfo output line {number}: expected 6 '|'-separated fields, got {line!r}"
            )
        raw_name, limit, cpus, memory, gres, state = fields
        if state.strip() != "up":
            continue
        name = raw_name.strip().rstrip("*")
        part = Partition(
            name=name,
            default=raw_name.strip().endswith("*"),
            max_minutes=parse_time_limit(limit),
            cpus=_number(cpus),
            memory_mb=_number(memory),
            gpus=parse_gpus(gres),
        )
        if name in found:
            old = found[name]
            part = Partition(
                name,
                old.default or part.default,
                old.max_minutes,
                max(old.cpus, part.cpus),
                max(old.memory_mb, part.memory_mb),
                max(old.gpus, part.gpus),
            )
        found[name] = part
    return list(found.values())


def query_partitions(sinfo: str = "sinfo", timeout: float = 15.0) -> list[Partition]:
    """Ask the cluster which partitions are up and how large they are.

    Raises
    ------
    BackendUnavailable
        When ``sinfo`` is missing, fails or times out (the controller is down).
    """
    try:
        result = subprocess.run(
            [sinfo, "-h", "-o", SINFO_FORMAT],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"sinfo could not be run: {exc}") from exc
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendUnavailable(f"sinfo failed (exit {result.returncode}): {message}")
    partitions = parse_sinfo(result.stdout)
    if not partitions:
        raise BackendUnavailable("sinfo lists no partition that is up")
    return partitions


def list_modules(modulepaths: Iterable[str | Path]) -> list[str]:
    """Full names (``name/version``) of the Lmod modules below some module paths.

    Hidden modules (a path part starting with ``.``) are left out; a path that does not
    exist is skipped with a warning.
    """
    names: list[str] = []
    for root in modulepaths:
        root = Path(root)
        if not root.is_dir():
            log.warning("module path %s does not exist; skipped", root)
            continue
        for lua in sorted(root.rglob("*.lua")):
            relative = lua.relative_to(root).with_suffix("")
            if len(relative.parts) < 2 or any(part.startswith(".") for part in relative.parts):
                continue
            name = relative.as_posix()
            if name not in names:
                names.append(name)
    return names


def split_paths(value: str | Sequence[str]) -> list[str]:
    """A ``:``-separated path list (or a list already) as a list without empty entries."""
    items = value.split(":") if isinstance(value, str) else list(value)
    return [item for item in items if item]
