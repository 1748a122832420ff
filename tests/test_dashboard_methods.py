"""The Segmentation comparison page's 'every method' view: a table written by mdlma compare (AppTest)."""

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


def make_comparison(home: Path) -> Path:
    """A finished comparison folder ``home/cmp`` of two methods on one 16x24x24 phantom."""
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
    return out


@pytest.fixture
def comparison(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    out = make_comparison(home)
    monkeypatch.setenv("MDLMA_HOME", str(home))
    st.cache_data.clear()
    return out


def test_method_comparison_page(comparison):
    app = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90)
    app.run()
    app.switch_page("views/compare.py").run()
    app.segmented_control(key="compare_view").set_value("methods").run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.title[0].value == "Segmentation comparison"
    summary = next(f.value for f in app.dataframe if "label" in f.value.columns)
    assert set(summary["method"]) == {"sun-9", "classical"} and len(summary) == 6
    assert len(app.get("plotly_chart")) >= 3  # bar chart + two overlays


def test_the_page_prepares_the_compare_template(comparison):
    app = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90)
    app.run()
    app.switch_page("views/compare.py").run()
    app.segmented_control(key="compare_view").set_value("methods").run()
    app.text_area(key="methods_train").set_value("a.tif a_gt.tif\nb.tif b_gt.tif")
    app.text_area(key="methods_test").set_value("c.tif c_gt.tif")
    app.multiselect(key="methods_chosen").set_value(["classical", "sun-9"]).run()
    assert not app.exception, [e.message for e in app.exception]
    array, merge_script = [c.value for c in app.code]
    assert "#SBATCH --array=0-1" in array
    assert "mdlma compare --train a.tif a_gt.tif b.tif b_gt.tif --test c.tif c_gt.tif" in array
    assert '--methods classical sun-9 --method-index "$SLURM_ARRAY_TASK_ID"' in array
    assert "mdlma compare --merge-only --out" in merge_script
    assert app.button(key="methods_submit")
