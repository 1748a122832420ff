"""Denoising methods: chunked (dask map_overlap) equals in memory, parameters checked, CLI."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.denoise import METHODS, denoise, halo, resolve_params
from unified_framework.errors import InputError
from unified_framework.io import read_volume, write_volume


@pytest.fixture(scope="module")
def noisy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    clean = np.zeros((12, 40, 40), np.float32)
    clean[:, 10:30, 10:30] = 1.0
    return clean, (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)


# (method, parameters, tolerance of chunked vs in memory)
CASES = [
    ("gaussian", {"sigma": 1.5}, 1e-5),
    ("median", {"size": 3}, 0),
    ("bilateral", {"sigma_color": 0.2, "sigma_spatial": 1.0}, 1e-3),  # grey-value LUT steps
    ("nl-means", {"h": 0.08, "patch_size": 3, "patch_distance": 2}, 1e-4),
    ("tv", {"weight": 0.1, "max_num_iter": 10, "eps": 0.0}, 1e-4),  # halo 20 > 10 iterations x 2
    ("wavelet", {"sigma": 0.1, "levels": 1}, 0.02),
    ("rings", {"size": 5}, 0),
]


@pytest.mark.parametrize(("name", "params", "tolerance"), CASES)
def test_chunked_equals_in_memory_and_denoises(noisy, name, params, tolerance):
    clean, image = noisy
    whole = denoise(image, name, params)
    chunked = denoise(da.from_array(image, chunks=(6, 20, 20)), name, params)
    assert isinstance(chunked, da.Array)
    chunked = chunked.compute()
    assert whole.dtype == np.float32 and whole.shape == image.shape
    assert np.abs(chunked - whole).max() <= tolerance + 1e-6
    if name != "rings":  # a stripe filter, not a denoiser
        assert np.abs(whole - clean).mean() < np.abs(image - clean).mean()


def test_2d_and_bm3d_chunked_close(noisy):
    clean, image = noisy
    plane = image[0, :32, :32]
    whole = denoise(plane, "bm3d", {"sigma": 0.1})
    chunked = denoise(da.from_array(plane, chunks=16), "bm3d", {"sigma": 0.1}).compute()
    assert np.abs(whole - clean[0, :32, :32]).mean() < np.abs(plane - clean[0, :32, :32]).mean()
    assert np.abs(chunked - whole).mean() < 0.01  # block grid restarts per chunk: close, not equal


def test_rings_removes_a_stripe():
    sino = np.ones((60, 40), np.float32)
    sino[:, 20] += 0.5  # a detector pixel reading too high: a ring after reconstruction
    out = denoise(sino, "rings", {"size": 5})
    assert abs(float(out[:, 20].mean()) - 1.0) < 0.05


def test_halo_follows_parameters():
    assert halo("gaussian", {"sigma": 2}, 3) == (8, 8, 8)
    assert halo("median", {"size": 5}, 2) == (2, 2)
    assert halo("bilateral", {"sigma_spatial": 2}, 3)[0] == 0  # slice by slice
    assert set(METHODS) >= {
        "gaussian",
        "median",
        "bilateral",
        "nl-means",
        "tv",
        "wavelet",
        "bm3d",
        "rings",
    }


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("gaussian", {"sigmax": 1}, "sigmax"),
        ("gaussian", {"sigma": "abc"}, "sigma"),
        ("gaussian", {"sigma": -1}, "sigma"),
        ("median", {"size": 4}, "size"),
        ("wavelet", {"mode": "medium"}, "mode"),
        ("gaussian", {"sigma": "nan"}, "sigma"),
    ],
)
def test_bad_parameters_name_the_field(name, params, field):
    with pytest.raises(InputError) as info:
        resolve_params(name, params)
    assert info.value.field == field and "\n" not in str(info.value)


def test_unknown_method_and_bad_image():
    with pytest.raises(InputError, match="unknown denoising method"):
        denoise(np.zeros((4, 4)), "blur")
    with pytest.raises(InputError, match="2D or 3D"):
        denoise(np.zeros(4), "gaussian")


def test_cli_zarr_out_of_core(tmp_path, noisy, capsys):
    _, image = noisy
    write_volume(tmp_path / "in.zarr", image, chunks=(6, 20, 20))
    assert (
        main(
            [
                "denoise",
                "gaussian",
                str(tmp_path / "in.zarr"),
                "--out",
                str(tmp_path / "out.zarr"),
                "--param",
                "sigma=1",
            ]
        )
        == 0
    )
    out = read_volume(tmp_path / "out.zarr").data
    np.testing.assert_allclose(out, denoise(image, "gaussian", {"sigma": 1}), atol=1e-5)
    assert (
        main(
            [
                "denoise",
                "median",
                str(tmp_path / "in.zarr"),
                "--out",
                str(tmp_path / "x.tif"),
                "--param",
                "size",
            ]
        )
        == 2
    )
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()
    assert main(["denoise", "list"]) == 0


def test_denoise_file_in_slabs_writes_lz4_and_matches_memory(tmp_path):
    import zarr

    from unified_framework.denoise import denoise_file, plan_slabs

    image = np.random.default_rng(1).normal(0, 1, (80, 16, 16)).astype(np.float32)
    write_volume(tmp_path / "in.zarr", image, chunks=(8, 8, 8))
    # Room for 68 planes: slabs of 64 (the output's chunk edge) with a halo of 2 on each side.
    budget = 68 * 16 * 16 * 4
    assert plan_slabs(image.shape, (2, 2, 2), threads=2, budget=budget) == (64, 16, 16)
    info = denoise_file(
        tmp_path / "in.zarr", tmp_path / "out.zarr", "median", {"size": 5}, budget=budget
    )
    assert info["chunks"] == [64, 16, 16] and info["halo"] == [2, 2, 2]
    out = read_volume(tmp_path / "out.zarr").data
    np.testing.assert_array_equal(out, denoise(image, "median", {"size": 5}))
    assert zarr.open_array(str(tmp_path / "out.zarr")).compressor.cname == "lz4"
    with pytest.raises(InputError, match="compression: expected one of zstd, lz4, none"):
        write_volume(tmp_path / "x.zarr", image, compression="gzip")
    assert not (tmp_path / "x.zarr").exists()
