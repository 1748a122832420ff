"""Which Lmod modules the hub offers as server environments.

What the SLURM cluster offers (partitions, their limits) is read by the SLURM layer,
:func:`unified_framework.hpc.cluster_limits`; this module only lists the module
environments of the hub's module paths.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


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
