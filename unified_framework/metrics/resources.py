"""Measure the resources a block of code uses: time, CPU, memory, GPU memory and energy.

Example
-------
>>> from unified_framework.metrics.resources import ResourceMeter
>>> with ResourceMeter() as meter:
...     total = sum(range(10**6))
>>> usage = meter.usage.to_dict()
>>> usage["wall_time_s"] > 0
True

GPU fields are ``None`` when NVML (package ``nvidia-ml-py``) or a GPU is not
available; ``torch_max_memory_allocated_bytes`` is ``None`` unless torch is already
imported and has initialised CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

logger = logging.getLogger(__name__)


@dataclass
class ResourceUsage:
    """What a :class:`ResourceMeter` measured.

    Attributes
    ----------
    wall_time_s : float
        Elapsed wall-clock time.
    cpu_time_s : float
        User + system CPU time of this process and of the child processes that ended
        (and were waited for) during the block.
    peak_rss_bytes : int
        Largest resident memory of this process plus its live children, sampled in a
        background thread every ``interval`` seconds (short peaks can be missed).
    max_rss_bytes : int
        ``getrusage`` peak resident memory of this process since it started (the
        kernel's exact high-water mark, not limited to the block).
    children_max_rss_bytes : int
        ``getrusage`` peak resident memory of the largest waited-for child process.
    gpu_index : int or None
        NVML index of the GPU watched.
    gpu_name : str or None
    gpu_memory_peak_bytes : int or None
        Largest device memory in use (all processes on that GPU), sampled via NVML.
    gpu_utilisation_mean_percent, gpu_utilisation_max_percent : float or None
        NVML GPU utilisation over the samples.
    gpu_energy_j : float or None
        Energy drawn by the GPU during the block (NVML total-energy counter; ``None``
        on GPUs older than Volta).
    torch_max_memory_allocated_bytes : int or None
        ``torch.cuda.max_memory_allocated()`` over the block when torch uses CUDA.
    samples : int
        Number of background samples taken.
    """

    wall_time_s: float
    cpu_time_s: float
    peak_rss_bytes: int
    max_rss_bytes: int
    children_max_rss_bytes: int
    gpu_index: int | None = None
    gpu_name: str | None = None
    gpu_memory_peak_bytes: int | None = None
    gpu_utilisation_mean_percent: float | None = None
    gpu_utilisation_max_percent: float | None = None
    gpu_energy_j: float | None = None
    torch_max_memory_allocated_bytes: int | None = None
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (JSON-serialisable)."""
        return asdict(self)


def _maxrss_bytes(who: int) -> int:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(who).ru_maxrss) * scale


def _tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += child.memory_info().rss
    return total


def _default_gpu_selector() -> int | str:
    """NVML index or UUID of the first GPU visible to CUDA in this process."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    if first.startswith(("GPU-", "MIG-")):
        return first
    return 0


class _NvmlWatcher:
    """Wraps the NVML calls; every method degrades to ``None`` when NVML cannot answer."""

    def __init__(self, selector: int | str):
        self.nvml: Any = None  # the pynvml module once loaded
        self.handle = None
        self.index = None
        self.name = None
        self.energy_start_mj = None
        self.memory_peak: int | None = None
        self.utilisation: list[float] = []
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError when there is no driver/GPU
            logger.debug("NVML not available, GPU fields stay empty: %s", exc)
            return
        self.nvml = pynvml
        try:
            if isinstance(selector, str):
                self.handle = pynvml.nvmlDeviceGetHandleByUUID(selector)
            else:
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(selector)
            self.index = int(pynvml.nvmlDeviceGetIndex(self.handle))
            name = pynvml.nvmlDeviceGetName(self.handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
        except pynvml.NVMLError as exc:
            logger.debug("NVML has no GPU %r: %s", selector, exc)
            self.close()
            return
        self.energy_start_mj = self._call("nvmlDeviceGetTotalEnergyConsumption")

    def _call(self, function: str):
        if self.handle is None:
            return None
        try:
            return getattr(self.nvml, function)(self.handle)
        except self.nvml.NVMLError as exc:
            logger.debug("NVML %s failed: %s", function, exc)
            return None

    def sample(self) -> None:
        memory = self._call("nvmlDeviceGetMemoryInfo")
        if memory is not None:
            self.memory_peak = max(self.memory_peak or 0, int(memory.used))
        rates = self._call("nvmlDeviceGetUtilizationRates")
        if rates is not None:
            self.utilisation.append(float(rates.gpu))

    def energy_j(self) -> float | None:
        end = self._call("nvmlDeviceGetTotalEnergyConsumption")
        if end is None or self.energy_start_mj is None:
            return None
        return (end - self.energy_start_mj) / 1000.0

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
        self.nvml = None
        self.handle = None


class ResourceMeter:
    """Context manager measuring the resources used inside its ``with`` block.

    Parameters
    ----------
    interval : float
        Seconds between background samples of RSS and GPU memory/utilisation.
    gpu : bool
        Watch a GPU through NVML (when available).
    gpu_index : int or str, optional
        NVML index or UUID of the GPU; default: the first GPU in
        ``CUDA_VISIBLE_DEVICES``, else 0.

    Attributes
    ----------
    usage : ResourceUsage or None
        Set when the block ends (also when it raises).

    Examples
    --------
    >>> with ResourceMeter(interval=0.05) as meter:
    ...     _ = bytearray(10**6)
    >>> meter.usage.wall_time_s >= 0
    True
    """

    def __init__(self, interval: float = 0.1, gpu: bool = True, gpu_index: int | str | None = None):
        self.interval = float(interval)
        self.gpu = gpu
        self.gpu_index = gpu_index
        self.usage: ResourceUsage | None = None
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: _NvmlWatcher | None = None
        self._peak_rss = 0
        self._samples = 0

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._peak_rss = max(self._peak_rss, _tree_rss(self._process))
        if self._nvml is not None:
            self._nvml.sample()
        self._samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @staticmethod
    def _torch_cuda():
        # Only look at torch if the caller already imported it: importing it here would
        # cost seconds and could initialise CUDA behind the caller's back.
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return torch.cuda

    def __enter__(self) -> ResourceMeter:
        if self.gpu:
            self._nvml = _NvmlWatcher(
                _default_gpu_selector() if self.gpu_index is None else self.gpu_index
            )
        cuda = self._torch_cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        self._peak_rss = 0
        self._samples = 0
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ResourceMeter", daemon=True)
        self._wall_start = time.perf_counter()
        self._cpu_start = os.times()
        self._thread.start()
        return self

    def finished_usage(self) -> ResourceUsage:
        """:attr:`usage`, which is set when the ``with`` block has ended.

        Raises
        ------
        RuntimeError
            Called before the block ended.
        """
        if self.usage is None:
            raise RuntimeError("ResourceMeter: usage is measured when the with block ends")
        return self.usage

    def __exit__(self, *exc_info) -> None:
        wall = time.perf_counter() - self._wall_start
        cpu_end = os.times()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        cpu = sum(
            getattr(cpu_end, field) - getattr(self._cpu_start, field)
            for field in ("user", "system", "children_user", "children_system")
        )
        cuda = self._torch_cuda()
        nvml = self._nvml if self._nvml is not None and self._nvml.handle is not None else None
        self.usage = ResourceUsage(
            wall_time_s=wall,
            cpu_time_s=cpu,
            peak_rss_bytes=self._peak_rss,
            max_rss_bytes=_maxrss_bytes(resource.RUSAGE_SELF),
            children_max_rss_bytes=_maxrss_bytes(resource.RUSAGE_CHILDREN),
            gpu_index=nvml.index if nvml else None,
            gpu_name=nvml.name if nvml else None,
            gpu_memory_peak_bytes=nvml.memory_peak if nvml else None,
            gpu_utilisation_mean_percent=(sum(nvml.utilisation) / len(nvml.utilisation))
            if nvml and nvml.utilisation
            else None,
            gpu_utilisation_max_percent=max(nvml.utilisation)
            if nvml and nvml.utilisation
            else None,
            gpu_energy_j=nvml.energy_j() if nvml else None,
            torch_max_memory_allocated_bytes=int(cuda.max_memory_allocated())
            if cuda is not None
            else None,
            samples=self._samples,
        )
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None
