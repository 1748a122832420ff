"""The shared start of the dashboard's AppTest tests: a fresh ``MDLMA_HOME`` and a page opened.

``tests/conftest.py`` registers this module as a plugin, so the ``home`` fixture is there for
every test (a module's own ``home`` fixture overrides it); import the helpers::

    from apptest_pages import assert_clean, open_page
"""

from __future__ import annotations

import functools
import sys
import tomllib
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as streamlit_config
from streamlit.components.v2 import manifest_scanner
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
# The pages import their components as top-level modules, as ``streamlit run`` does.
sys.path.insert(0, str(REPO / "dashboard"))

# AppTest does not read the app's script-level configuration, which the served dashboard
# runs with (dashboard/.streamlit/config.toml): apply it here.
for _section, _options in tomllib.loads(
    (APP.parent / ".streamlit" / "config.toml").read_text()
).items():
    for _name, _value in _options.items():
        streamlit_config.set_option(f"{_section}.{_name}", _value)

# Every AppTest scans all installed distributions for Streamlit components when it first
# runs (1-2 s of CPU each in a test worker); the installed packages do not change during
# a test session, so one scan per process serves every AppTest.
manifest_scanner.scan_component_manifests = functools.cache(
    manifest_scanner.scan_component_manifests
)

# A served dashboard compiles each page once (one script cache per server); AppTest makes a
# new cache for every run and compiles app.py and the page again each time. The scripts do
# not change during a test session: one cache serves them all, as on the server.
_script_cache = app_test_module.ScriptCache()
app_test_module.ScriptCache = lambda: _script_cache  # type: ignore[assignment,misc]


@pytest.fixture(autouse=True)
def _main_module_kept():
    """Put the process's ``__main__`` back after each test.

    Streamlit runs a page as module ``__main__`` and leaves it in ``sys.modules``; a later
    test's multiprocessing workers (dask's LocalCluster) would then each run
    ``dashboard/app.py`` again as they start (spawn re-runs the parent's main script).
    """
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def use_home(folder: Path, monkeypatch) -> Path:
    """Point the dashboard at ``folder`` and drop what earlier tests left in Streamlit's caches."""
    monkeypatch.setenv("MDLMA_HOME", str(folder))
    st.cache_data.clear()
    st.cache_resource.clear()
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty MDLMA_HOME for one test."""
    folder = tmp_path / "home"
    folder.mkdir()
    return use_home(folder, monkeypatch)


def open_page(view: str, timeout: float = 180, **query: str) -> AppTest:
    """Run the app, set ``query`` parameters and switch to ``views/<view>.py``."""
    app = AppTest.from_file(str(APP), default_timeout=timeout)
    app.run()
    app.query_params.update(query)
    app.switch_page(f"views/{view}.py").run()
    return app


def assert_clean(app: AppTest) -> None:
    """No exception was shown on the page."""
    assert not app.exception, [e.message for e in app.exception]
