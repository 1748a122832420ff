"""The README's main command, ``scripts/demo``, on its embedded defaults.

It installs (reusing the cached environment), loads the real Lmod module, makes the
phantoms, trains SUN for 300 steps on the CPU, predicts along nine axes and scores the
result and a multi-Otsu baseline. The test checks what it leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from unified_framework.io import read_volume

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.lmod, pytest.mark.slow]


def test_demo_segments_the_held_out_phantom(tmp_path, lmod_init, prefix):
    out = tmp_path / "demo"
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MDLMA_HOME": str(tmp_path / "home")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "== done" in run.stdout

    sun = {row["name"]: row for row in json.loads((out / "sun_scores.json").read_text())["rows"]}
    assert (
        sun["bone"]["dice"] > 0.85
        and sun["implant"]["dice"] > 0.85
        and sun["degradation"]["dice"] > 0.7
    )
    otsu = json.loads((out / "otsu_report.json").read_text())
    assert {row["label"] for row in otsu["scores"]} == {1, 2, 3}
    # The baseline cannot tell the degradation layer from bone by grey value: SUN can.
    otsu_dice = {row["label"]: row["dice"] for row in otsu["scores"]}
    assert sun["degradation"]["dice"] > otsu_dice[3]

    labels = read_volume(out / "sun_labels.zarr")
    entropy = read_volume(out / "sun_labels_entropy.zarr")
    assert labels.data.shape == entropy.data.shape == (64, 64, 64)
    assert labels.spacing == (5.0, 5.0, 5.0)
    metrics = [json.loads(line) for line in (out / "sun.pt.metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in metrics) == 300 and any(
        line["phase"] == "val" for line in metrics
    )
