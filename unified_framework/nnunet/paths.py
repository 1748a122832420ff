"""nnU-Net's three folders per user, and the environment the ``nnunetv2`` calls run in.

nnU-Net v2 finds its data through the environment variables ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results``. They come from the project
configuration (``[nnunet]`` in ``~/.config/mdlma/config.toml`` or
``MDLMA_NNUNET_RAW`` ...), by default below the user's ``home``:
``<home>/nnunet/nnUNet_raw`` and so on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config

#: The folder holding :mod:`.trainers` (handed to nnU-Net as ``nnUNet_extTrainer``).
TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"


@dataclass(frozen=True)
class NnUNetPaths:
    """The three nnU-Net folders of one user."""

    raw: Path
    preprocessed: Path
    results: Path

    def env(self, threads: int | None = None) -> dict[str, str]:
        """Environment variables for an ``nnunetv2`` call (a copy of ``os.environ`` plus them).

        ``threads`` caps nnU-Net's worker processes and torch's threads (a shared
        machine, a SLURM allocation).
        """
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_extTrainer=str(TRAINERS_DIR),
        )
        if threads is not None:
            env.update(
                nnUNet_n_proc_DA=str(max(1, threads)),
                nnUNet_def_n_proc=str(max(1, threads)),
                OMP_NUM_THREADS=str(max(1, threads)),
                MKL_NUM_THREADS=str(max(1, threads)),
            )
        return env


def nnunet_paths(env: Mapping[str, str] | None = None) -> NnUNetPaths:
    """The user's nnU-Net folders from the configuration.

    Examples
    --------
    >>> paths = nnunet_paths({"MDLMA_HOME": "/data/alice", "MDLMA_CONFIG": "/nonexistent"})
    >>> str(paths.raw), str(paths.results)
    ('/data/alice/nnunet/nnUNet_raw', '/data/alice/nnunet/nnUNet_results')
    """
    config = load_config(env)
    section = config.get("nnunet") or {}
    home = Path(config["home"])

    def folder(key: str, default: str) -> Path:
        value = str(section.get(key) or "")
        if not value:
            return home / "nnunet" / default
        return Path(os.path.expandvars(value)).expanduser().absolute()

    return NnUNetPaths(
        folder("raw", "nnUNet_raw"),
        folder("preprocessed", "nnUNet_preprocessed"),
        folder("results", "nnUNet_results"),
    )
