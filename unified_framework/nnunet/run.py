"""Plan, preprocess and train with nnU-Net v2's own commands, in the user's nnU-Net folders.

Each step runs nnU-Net's console command in a child process of this interpreter
(``python -m unified_framework.nnunet._entry``) with ``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results`` and ``nnUNet_extTrainer`` set from the
project configuration, so nothing of nnU-Net is re-implemented and several users (or
datasets) never share one process' global state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, MDLMAError
from ..utils.atomic import atomic_path
from .dataset import dataset_name
from .paths import NnUNetPaths

#: The trainer whose length ``train`` sets (``trainers/nnUNetTrainerMDLMA.py``).
TRAINER = "nnUNetTrainerMDLMA"
CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")


class NnUNetFailed(MDLMAError):
    """An nnU-Net command exited with an error (the message ends with its last output line)."""


def run_nnunet(
    command: str,
    args: Sequence[str],
    paths: NnUNetPaths,
    *,
    threads: int | None = None,
    extra_env: dict[str, str] | None = None,
    log: str | Path | IO[str] | None = None,
) -> None:
    """Run nnU-Net console command ``command`` with ``args`` in a child process.

    Parameters
    ----------
    command : str
        ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train`` ...
    args : sequence of str
        Its arguments (a list: nothing goes through a shell).
    paths : NnUNetPaths
    threads : int, optional
        Worker processes and threads (see :meth:`NnUNetPaths.env`).
    extra_env : dict, optional
    log : path or text stream, optional
        Where nnU-Net's output goes (appended to a file); default this process' stdout.

    Raises
    ------
    NnUNetFailed
        The command exited with an error.
    """
    env = paths.env(threads)
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "unified_framework.nnunet._entry", command, *map(str, args)]
    handle: Any = None
    if isinstance(log, (str, Path)):
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        out: Any = handle
    else:
        out = log
    try:
        result = subprocess.run(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT if out is not None else None
        )
    finally:
        if handle is not None:
            handle.close()
    if result.returncode != 0:
        tail = ""
        if isinstance(log, (str, Path)):
            lines = [
                x for x in Path(log).read_text(encoding="utf-8", errors="replace").splitlines() if x
            ]
            tail = f": {lines[-1][:300]}" if lines else ""
        raise NnUNetFailed(
            f"{command} {' '.join(map(str, args))} failed (exit {result.returncode}){tail}"
        )


def find_dataset(paths: NnUNetPaths, dataset_id: int) -> str:
    """The ``DatasetXXX_Name`` of id ``dataset_id`` in ``nnUNet_raw`` (or preprocessed)."""
    prefix = f"Dataset{int(dataset_id):03d}_"
    for folder in (paths.raw, paths.preprocessed):
        if folder.is_dir():
            found = sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))
            if found:
                return found[0]
    raise InputError(
        f"dataset {dataset_id}: no {prefix}* in {paths.raw}; export it first (mdlma nnunet export)",
        field="dataset_id",
    )


def plan_and_preprocess(
    paths: NnUNetPaths,
    dataset_id: int,
    configurations: Sequence[str] = ("2d", "3d_fullres"),
    *,
    threads: int = 1,
    verify: bool = True,
    log: str | Path | IO[str] | None = None,
) -> Path:
    """nnU-Net's fingerprint, experiment planning and preprocessing of one dataset.

    Returns
    -------
    pathlib.Path
        The preprocessed dataset folder (with ``nnUNetPlans.json``).

    Examples
    --------
    >>> plan_and_preprocess(nnunet_paths(), 501, ["2d"])  # doctest: +SKIP
    """
    name = find_dataset(paths, dataset_id)
    for c in configurations:
        if c not in CONFIGURATIONS:
            raise InputError(
                f"configuration {c!r}: expected one of {', '.join(CONFIGURATIONS)}",
                field="configurations",
            )
    args = ["-d", str(dataset_id), "-c", *configurations, "-npfp", str(threads)]
    args += ["-np", *[str(threads)] * len(configurations)]
    if verify:
        args.append("--verify_dataset_integrity")
    run_nnunet("nnUNetv2_plan_and_preprocess", args, paths, threads=threads, log=log)
    return paths.preprocessed / name


def training_folder(
    paths: NnUNetPaths,
    dataset_id: int,
    configuration: str,
    trainer: str = TRAINER,
    plans: str = "nnUNetPlans",
) -> Path:
    """nnU-Net's result folder ``<results>/DatasetXXX_Name/<trainer>__<plans>__<configuration>``."""
    return paths.results / find_dataset(paths, dataset_id) / f"{trainer}__{plans}__{configuration}"


def train(
    paths: NnUNetPaths,
    dataset_id: int,
    configuration: str = "2d",
    fold: str | int = "all",
    *,
    epochs: int = 1000,
    iterations: int = 250,
    val_iterations: int | None = None,
    trainer: str | None = None,
    device: str = "auto",
    threads: int = 1,
    resume: bool = False,
    final_validation: bool = True,
    log: str | Path | IO[str] | None = None,
) -> Path:
    """Train one fold of one configuration with ``nnUNetv2_train``.

    Parameters
    ----------
    paths : NnUNetPaths
    dataset_id : int
    configuration : str
        ``2d``, ``3d_fullres`` (or ``3d_lowres`` where planned).
    fold : int or "all"
        A cross-validation fold (0-4) or ``all`` (every case; no validation split).
    epochs, iterations, val_iterations : int
        Training length of :data:`TRAINER` (nnU-Net's defaults: 1000, 250, 50).
    trainer : str, optional
        Another nnU-Net trainer by name (then epochs and iterations are its own).
    device : str
        ``cuda``, ``cpu`` or ``auto`` (a GPU if there is one).
    threads : int
        Augmentation workers and torch threads.
    resume : bool
        Continue from the fold's latest checkpoint (nnU-Net's ``--c``).
    final_validation : bool
        nnU-Net's validation pass after training (with fold ``all`` it predicts every
        training case; off for short benchmark budgets).
    log : path or stream, optional

    Returns
    -------
    pathlib.Path
        The training output folder (``.../fold_X`` sits in it).

    Examples
    --------
    >>> train(nnunet_paths(), 501, "2d", "all", epochs=2, iterations=10, device="cpu")  # doctest: +SKIP
    """
    if configuration not in CONFIGURATIONS:
        raise InputError(
            f"configuration {configuration!r}: expected one of {', '.join(CONFIGURATIONS)}",
            field="configuration",
        )
    fold = str(fold)
    if fold != "all" and not (fold.isdigit() and int(fold) < 5):
        raise InputError(f"fold {fold!r}: expected 0 .. 4 or 'all'", field="fold")
    if min(epochs, iterations) < 1:
        raise InputError("epochs and iterations: expected positive numbers", field="epochs")
    name = find_dataset(paths, dataset_id)
    plans_file = paths.preprocessed / name / "nnUNetPlans.json"
    if not plans_file.is_file():
        raise InputError(
            f"{plans_file}: not found; plan and preprocess first (mdlma nnunet plan --id {dataset_id})",
            field="dataset_id",
        )
    planned = json.loads(plans_file.read_text(encoding="utf-8")).get("configurations", {})
    if configuration not in planned:
        raise InputError(
            f"configuration {configuration!r}: not planned for {name} (planned: {', '.join(planned)})",
            field="configuration",
        )
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer_name = trainer or TRAINER
    extra = {
        "MDLMA_NNUNET_EPOCHS": str(epochs),
        "MDLMA_NNUNET_ITERATIONS": str(iterations),
        "MDLMA_NNUNET_VAL_ITERATIONS": str(
            val_iterations if val_iterations is not None else max(1, iterations // 5)
        ),
    }
    if not final_validation:
        extra["MDLMA_NNUNET_FINAL_VALIDATION"] = "0"
    if threads <= 1:
        extra["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process itself
    args = [str(dataset_id), configuration, fold, "-tr", trainer_name, "-device", device]
    if resume:
        args.append("--c")
    started = time.perf_counter()
    run_nnunet("nnUNetv2_train", args, paths, threads=threads, extra_env=extra, log=log)
    folder = training_folder(paths, dataset_id, configuration, trainer_name)
    record = {
        "dataset": name,
        "configuration": configuration,
        "fold": fold,
        "trainer": trainer_name,
        "epochs": epochs if trainer is None else None,
        "iterations_per_epoch": iterations if trainer is None else None,
        "device": device,
        "threads": threads,
        "final_validation": final_validation,
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_path(folder / f"fold_{fold}" / "mdlma_training.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return folder


__all__ = [
    "CONFIGURATIONS",
    "TRAINER",
    "NnUNetFailed",
    "dataset_name",
    "find_dataset",
    "plan_and_preprocess",
    "run_nnunet",
    "train",
    "training_folder",
]
