"""ResourceMeter: wall/CPU time, memory peaks, children, and the GPU fields."""

import json
import subprocess
import sys
import time
import types

import numpy as np
import psutil
import pytest

from unified_framework.metrics import resources
from unified_framework.metrics.resources import ResourceMeter

GPU_FIELDS = (
    "gpu_index",
    "gpu_name",
    "gpu_memory_peak_bytes",
    "gpu_utilisation_mean_percent",
    "gpu_utilisation_max_percent",
    "gpu_energy_j",
)


def nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def test_wall_and_cpu_time():
    outer = time.perf_counter()
    with ResourceMeter(interval=0.02) as meter:
        inner = time.perf_counter()
        time.sleep(0.2)
        start = time.process_time()
        while time.process_time() - start < 0.2:  # the meter's own thread counts too
            pass
        inner = time.perf_counter() - inner
    outer = time.perf_counter() - outer
    usage = meter.usage
    assert inner <= usage.wall_time_s <= outer
    assert 0.2 <= usage.cpu_time_s < usage.wall_time_s
    assert usage.samples >= 5


def test_cpu_time_includes_finished_child_processes():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    with ResourceMeter(interval=0.05) as meter:
        subprocess.run([sys.executable, "-c", busy], check=True)
    # The parent only waits; the CPU time is the child's.
    assert meter.usage.cpu_time_s >= 0.4
    assert meter.usage.children_max_rss_bytes > 0


def test_peak_rss_sees_a_temporary_allocation():
    baseline = psutil.Process().memory_info().rss
    size = 200 * 2**20
    with ResourceMeter(interval=0.01) as meter:
        block = np.ones(size, dtype=np.uint8)  # written, so resident
        time.sleep(0.2)
        del block
    usage = meter.usage
    assert usage.peak_rss_bytes >= baseline + 0.8 * size
    # The kernel's high-water mark covers the sampled peak (up to its lazily synced page counters).
    assert usage.max_rss_bytes >= 0.99 * usage.peak_rss_bytes
    assert psutil.Process().memory_info().rss < usage.peak_rss_bytes


def test_usage_is_recorded_when_the_block_raises():
    meter = ResourceMeter(interval=0.01)
    with pytest.raises(RuntimeError):
        with meter:
            raise RuntimeError("boom")
    assert meter.usage is not None and meter.usage.wall_time_s >= 0


def test_gpu_fields_follow_nvml_availability():
    with ResourceMeter(interval=0.01) as meter:
        pass
    fields = meter.usage.to_dict()
    json.dumps(fields)  # plain, serialisable values
    if nvml_works():
        assert fields["gpu_name"] and fields["gpu_memory_peak_bytes"] > 0
    else:
        assert all(fields[name] is None for name in GPU_FIELDS)
    if "torch" not in sys.modules:
        assert fields["torch_max_memory_allocated_bytes"] is None


def test_gpu_fields_without_gpu_watching_are_none():
    with ResourceMeter(gpu=False) as meter:
        pass
    assert all(getattr(meter.usage, name) is None for name in GPU_FIELDS)


class FakeNVMLError(Exception):
    pass


def fake_pynvml(energy_mj, memory_used, utilisation):
    """Stand-in for pynvml: this machine has no NVIDIA driver, so the real one cannot answer.

    Each call returns the next value of the given sequences, to check the arithmetic of
    the meter (energy difference, memory peak, utilisation mean/max).
    """
    energy, memory, rates = iter(energy_mj), iter(memory_used), iter(utilisation)
    module = types.SimpleNamespace(NVMLError=FakeNVMLError, calls=[])
    module.nvmlInit = lambda: module.calls.append("init")
    module.nvmlShutdown = lambda: module.calls.append("shutdown")
    module.nvmlDeviceGetHandleByIndex = lambda index: ("handle", index)
    module.nvmlDeviceGetIndex = lambda handle: handle[1]
    module.nvmlDeviceGetName = lambda handle: b"Fake GPU"
    module.nvmlDeviceGetTotalEnergyConsumption = lambda handle: next(energy)
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=next(memory, 0))
    module.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=next(rates, 0))
    return module


def test_nvml_values_are_combined_correctly(monkeypatch):
    fake = fake_pynvml(
        energy_mj=[1_000_000, 1_250_500], memory_used=[10, 500, 30], utilisation=[20, 80, 50]
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    # A long interval: only the samples at entry and exit are taken.
    with ResourceMeter(interval=60) as meter:
        pass
    usage = meter.usage
    assert usage.gpu_index == 3 and usage.gpu_name == "Fake GPU"
    assert usage.gpu_energy_j == pytest.approx(250.5)
    assert usage.gpu_memory_peak_bytes == 500
    assert (
        usage.gpu_utilisation_mean_percent == pytest.approx(50.0)
        and usage.gpu_utilisation_max_percent == 80
    )
    assert fake.calls == ["init", "shutdown"]


def test_nvml_errors_leave_fields_empty(monkeypatch):
    fake = fake_pynvml([], [], [])

    def unsupported(handle):
        raise FakeNVMLError("not supported")

    fake.nvmlDeviceGetTotalEnergyConsumption = unsupported
    fake.nvmlDeviceGetMemoryInfo = unsupported
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with ResourceMeter(interval=60, gpu_index=0) as meter:
        pass
    assert meter.usage.gpu_name == "Fake GPU"
    assert meter.usage.gpu_energy_j is None and meter.usage.gpu_memory_peak_bytes is None


def test_default_gpu_selector_reads_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234,GPU-5678")
    assert resources._default_gpu_selector() == "GPU-1234"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resources._default_gpu_selector() == 0
