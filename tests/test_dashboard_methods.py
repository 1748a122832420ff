"""The Method comparison page shows a table written by mdlma compare (AppTest, no cluster needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from unified_framework.compare import merge
from unified_framework.data.phantom import make_implant_phantom
from unified_framework.io import Volume, write_volume

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dashboard"))


@pytest.fixture
def comparison(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    out = home / "cmp"
    image, labels = make_implant_phantom((16, 24, 24), seed=1)
    write_volume(home / "img.tif", Volume(image))
    for method, shift in (("sun-9", 0), ("classical", 1)):
        pred = np.roll(labels, shift, axis=2).astype(np.uint8)
        write_volume(out / "predictions" / method / "case_000.tif", Volume(pred))
        rows = [
            {
                "method": method,
                "case": str(home / "img.tif"),
                "label": c,
                "dice": 0.9 - 0.1 * shift,
                "hd95": 5.0,
                "assd": 1.0,
                "volume_ratio": 1.0,
            }
            for c in (1, 2, 3)
        ]
        (out / "methods").mkdir(parents=True, exist_ok=True)
        (out / "methods" / f"{method}.json").write_text(
            json.dumps(
                {
                    "method": method,
                    "model": "m",
                    "train_seconds": 1.0,
                    "predict_seconds": 2.0,
                    "peak_rss_bytes": 2**30,
                    "gpu_memory_peak_bytes": None,
                    "gpu_name": None,
                    "rows": rows,
                }
            )
        )
    merge(out)
    monkeypatch.setenv("MDLMA_HOME", str(home))
    st.cache_data.clear()
    return out


def test_method_comparison_page(comparison):
    app = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90)
    app.run()
    app.switch_page("views/methods.py").run()
    assert not app.exception, [e.message for e in app.exception]
    summary = next(f.value for f in app.dataframe if "label" in f.value.columns)
    assert set(summary["method"]) == {"sun-9", "classical"} and len(summary) == 6
    assert len(app.get("plotly_chart")) >= 3  # bar chart + two overlays
