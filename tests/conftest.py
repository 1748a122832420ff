"""Shared pytest configuration.

Tests marked ``slurm``, ``lmod``, ``browser`` or ``hub`` drive real services started by
the project's scripts (see README, "Tests"). When a service is missing they are
skipped on a developer's laptop but fail under ``CI=true``, so a CI run can never
pass by skipping them.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path

import pytest

#: The SLURM fixtures (slurm_cluster, slurm_test_user, planted_state, ...) for every test file.
pytest_plugins = ["conftest_slurm", "apptest_pages"]

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip (developer machine) or fail (CI) when a real service is unavailable."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prefix() -> Path:
    """The install prefix made by ``scripts/install`` (default ``<clone>/.mdlma``)."""
    path = Path(os.environ.get("MDLMA_PREFIX", REPO / ".mdlma"))
    require(
        (path / "venv" / "bin" / "mdlma").exists(),
        f"no installation at {path}; run scripts/install",
    )
    return path


@pytest.fixture(scope="session")
def lmod_init() -> Path:
    init = Path(os.environ.get("LMOD_PKG", "/usr/share/lmod/lmod")) / "init" / "bash"
    require(
        init.exists() and shutil.which("bash") is not None,
        "Lmod is not installed (scripts/system-deps lmod)",
    )
    return init


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny networks: threads only add start-up and noise)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory, monkeypatch):
    """Keep every test away from the real ~/.config/mdlma and ~/mdlma."""
    home = tmp_path_factory.mktemp("mdlma-home")
    monkeypatch.setenv("MDLMA_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("MDLMA_HOME", str(home / "data"))


#: Test files of the fast lane that take longest, as measured in a 3-worker run on 2 cores:
#: files that mostly compute alternate with files that mostly wait for SLURM jobs and
#: services, longest first. Parallel workers (``scripts/test --fast``: ``pytest -n N --dist
#: loadfile --no-loadscope-reorder``) take whole files in collection order, so these go
#: first, two computing beside one waiting, and the many short files fill the end: a long
#: file started last would keep one worker busy while the others idle.
HEAVY_FIRST = (
    "test_hpc_hostile.py",
    "test_dashboard_pages.py",  # waits
    "test_io.py",
    "test_slurm_jobs.py",  # waits
    "test_inference_bioimageio.py",
    "test_dashboard_inference.py",  # waits
    "test_sun_pipeline.py",
    "test_inference_slurm.py",  # waits
    "test_registration.py",
    "test_module.py",  # waits
    "test_histology.py",
    "test_search.py",  # waits
    "test_dashboard_histology.py",
    "test_dashboard_catalogue.py",  # waits
    "test_registration_cli.py",
    "test_install.py",  # waits
    "test_analysis.py",
    "test_inference.py",
    "test_sample_data.py",
    "test_search_slurm.py",  # waits
    "test_histology_transfer.py",
    "test_slurm_cluster.py",  # waits
)


def pytest_collection_finish(session):
    """Freeze what collection imported (torch, dask, the framework: ~1 million objects) out
    of the cyclic garbage collector: every full collection would walk them again, which
    made each test of a worker that had imported TensorFlow several times slower."""
    _freeze_heap()


#: Modules imported since the last freeze above which a test starts by freezing again.
NEW_MODULES_LIMIT = 300
_modules_when_frozen = 0


def _freeze_heap() -> None:
    global _modules_when_frozen
    gc.collect()
    gc.freeze()
    _modules_when_frozen = len(sys.modules)


@pytest.fixture(autouse=True)
def _freeze_what_earlier_tests_imported():
    """Freeze, before a test, what earlier tests of this process imported.

    A test that imports TensorFlow or nnU-Net leaves ~700,000 more objects behind, and some
    libraries run a full collection at every step: Streamlit after every script run once
    ``keras`` is imported (``keras.backend.clear_session``), bioimage.io after every model
    it unloads. Each such collection walked all of them again (0.4 s a time; a quarter of
    the fast lane's CPU). Counting modules is free; the collection before a freeze is paid
    once per such import.
    """
    if len(sys.modules) - _modules_when_frozen > NEW_MODULES_LIMIT:
        _freeze_heap()


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that uses a fixture its module names in ``SLOW_FIXTURES``;
    under parallel workers, move the :data:`HEAVY_FIRST` files to the front.

    pytest has no marks on fixtures; a session fixture that trains a model makes slow
    every test that needs it, whoever writes the next such test. ``scripts/test --fast``
    leaves the ``slow`` tests out.
    """
    for item in items:
        module = getattr(item, "module", None)
        if set(getattr(module, "SLOW_FIXTURES", ())) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # On the controller numprocesses is set, on a worker workerinput; both orders must match.
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        rank = {name: index for index, name in enumerate(HEAVY_FIRST)}
        # sort is stable: the order inside each file and among the other files is kept
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
