"""What is installed and what this machine offers: versions, cores, memory, GPUs, backends."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
from typing import Any

from . import __version__
from .config import config_path

#: Distribution names whose versions ``mdlma info`` reports.
CORE_PACKAGES = (
    "numpy",
    "scipy",
    "scikit-image",
    "SimpleITK",
    "dask",
    "zarr",
    "h5py",
    "tifffile",
    "nibabel",
    "pydicom",
    "torch",
    "torchvision",
    "streamlit",
    "jupyterhub",
    "batchspawner",
    "jupyter-server-proxy",
    "pyscicat",
)

#: Optional backends: import name -> what the framework uses it for.
OPTIONAL_BACKENDS = {
    "tomopy": "tomographic reconstruction (conda-forge only; pip path uses algotom/astra)",
    "algotom": "tomographic reconstruction and ring removal (pip path)",
    "astra": "GPU/CPU tomography projectors (astra-toolbox)",
    "tensorflow": "legacy TensorFlow models",
    "nnunetv2": "nnU-Net v2 training and inference",
    "voxelmorph": "VoxelMorph registration",
    "dask_jobqueue": "dask clusters on SLURM",
}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpus() -> list[dict[str, Any]]:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return gpus


def available_memory() -> int:
    """Bytes this process can still allocate: free RAM, or less under a cgroup limit.

    A SLURM job (or container) may be held to far less than the machine has; its
    cgroup v2 ``memory.max`` minus ``memory.current`` is then what is left.

    Examples
    --------
    >>> available_memory() > 0
    True
    """
    import psutil

    free = int(psutil.virtual_memory().available)
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            group = next(
                (line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None
            )
        if group is not None:
            folder = os.path.join("/sys/fs/cgroup", group.lstrip("/"))
            with open(os.path.join(folder, "memory.max"), encoding="utf-8") as f:
                limit = f.read().strip()
            with open(os.path.join(folder, "memory.current"), encoding="utf-8") as f:
                current = int(f.read().strip())
            if limit != "max":
                free = min(free, max(0, int(limit) - current))
    except (OSError, ValueError, IndexError):
        pass  # no cgroup v2 memory controller here: free RAM is the limit
    return free


def collect_system_info() -> dict[str, Any]:
    """Return a JSON-serialisable description of the installation and the machine.

    Returns
    -------
    dict
        Keys ``mdlma``, ``python``, ``platform``, ``cpus`` (usable by this process),
        ``cpus_total``, ``memory_gib``, ``gpus`` (via torch), ``packages`` (name ->
        version or None), ``backends`` (import name -> {available, purpose}),
        ``scheduler`` (SLURM commands found), ``module`` (loaded Lmod module) and
        ``config_file``.
    """
    import psutil

    usable_cpus = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    return {
        "mdlma": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": usable_cpus,
        "cpus_total": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "memory_available_gib": round(available_memory() / 2**30, 1),
        "gpus": _gpus(),
        "packages": {name: _version(name) for name in CORE_PACKAGES},
        "backends": {
            name: {"available": importlib.util.find_spec(name) is not None, "purpose": purpose}
            for name, purpose in OPTIONAL_BACKENDS.items()
        },
        "scheduler": {cmd: shutil.which(cmd) for cmd in ("sbatch", "squeue", "sacct", "sinfo")},
        "module": os.environ.get("MDLMA_MODULE")
        and f"{os.environ['MDLMA_MODULE']}/{os.environ.get('MDLMA_MODULE_VERSION', '')}",
        "config_file": str(config_path()),
    }
