"""Reconstruction from simulated projections of the phantom: FBP and iterative methods."""

from __future__ import annotations

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.io import read_volume
from unified_framework.recon import (
    forward_project,
    pick_backend,
    projection_phantom,
    read_projections,
    reconstruct,
    tomopy_available,
    write_projections,
)


@pytest.fixture(scope="module")
def simulated():
    slab = projection_phantom(48, 2)
    angles = np.linspace(0, np.pi, 72, endpoint=False)
    return slab, angles, forward_project(slab, angles)


def relative_rmse(result: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(((result - truth) ** 2).mean()) / (truth.max() - truth.min()))


# Stated errors (RMSE relative to the phantom's grey range) on 72 noise-free angles.
@pytest.mark.parametrize(
    ("method", "iterations", "limit"),
    [("fbp", 1, 0.10), ("sirt", 100, 0.10), ("sart", 10, 0.06), ("cgls", 30, 0.05)],
)
def test_reconstruction_matches_the_phantom(simulated, method, iterations, limit):
    slab, angles, projections = simulated
    result = reconstruct(projections, angles, method, iterations=iterations)
    assert result.shape == slab.shape
    assert relative_rmse(result, slab) < limit


def test_tomopy_only_methods_say_so():
    if tomopy_available():
        pytest.skip("tomopy is installed here")
    with pytest.raises(InputError, match="only in tomopy") as info:
        pick_backend("gridrec")
    assert info.value.field == "method" and "fbp" in str(info.value)


def test_bad_input(simulated):
    _, angles, projections = simulated
    with pytest.raises(InputError, match="one per projection"):
        reconstruct(projections, angles[:-1])
    with pytest.raises(InputError, match="iterations"):
        reconstruct(projections, angles, "sirt", iterations=0)


def test_file_round_trip_and_cli(tmp_path, simulated):
    slab, angles, projections = simulated
    write_projections(tmp_path / "p.nxs", projections, angles)
    data, theta, _ = read_projections(tmp_path / "p.nxs")
    np.testing.assert_allclose(theta, angles, atol=1e-9)
    assert (
        main(
            ["recon", str(tmp_path / "p.nxs"), "--out", str(tmp_path / "r.tif"), "--method", "fbp"]
        )
        == 0
    )
    assert relative_rmse(read_volume(tmp_path / "r.tif").data, slab) < 0.10
    assert (
        main(
            [
                "sample",
                "projections",
                str(tmp_path / "s.h5"),
                "--phantom",
                str(tmp_path / "t.tif"),
                "--size",
                "32",
                "--rows",
                "1",
                "--angles",
                "40",
            ]
        )
        == 0
    )
    assert read_volume(tmp_path / "s.h5").shape == (40, 1, 32)
