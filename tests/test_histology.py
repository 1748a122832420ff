"""Virtual sections (geometry, thickness, laziness), the synthetic section sample and locating it, bad input."""

from __future__ import annotations

import json
import math

import dask.array as da
import numpy as np
import pytest
import tifffile

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.histology import (
    Plane,
    angle_between,
    normal_from_angles,
    virtual_section,
    virtual_stack,
)
from unified_framework.io import Volume, read_volume, write_volume


def _linear_volume() -> tuple[Volume, np.ndarray, float]:
    """f(world) = g . world + c on an anisotropic, rotated, shifted grid: trilinear sampling is exact."""
    shape, spacing = (20, 24, 28), (3.0, 2.0, 1.5)
    a = math.radians(30)
    direction = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    vol = Volume(
        np.zeros(shape, np.float32), spacing, origin=(100.0, -20.0, 5.0), direction=direction
    )
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(
        -1, 4 - 1
    )
    world = idx @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    g, c = np.array([0.7, -0.3, 0.2]), 4.0
    vol.data[...] = (world @ g + c).reshape(shape)
    return vol, g, c


def test_oblique_plane_matches_the_analytic_values_in_world_coordinates():
    vol, g, c = _linear_volume()
    centre = vol.affine @ np.append((np.array(vol.shape) - 1) / 2, 1)
    plane = Plane(centre[:3], normal_from_angles(35, 120))
    cut = virtual_section(vol, plane, pixel_size=1.25, shape=(15, 17))
    rows = (np.arange(15) - 7) * 1.25
    cols = (np.arange(17) - 8) * 1.25
    vu = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1)
    world = plane.world(vu)
    np.testing.assert_allclose(cut.data, world @ g + c, atol=1e-3)
    # The image carries its world geometry: its affine maps pixel (r, c) to that position.
    assert np.allclose(cut.affine @ [0, 14, 16, 1], np.append(world[14, 16], 1), atol=1e-6)
    assert np.allclose(cut.direction[:, 0], plane.normal)
    assert cut.spacing == (1.25, 1.25) and cut.metadata["inside_fraction"] == 1.0


def test_thickness_averages_the_slab_and_a_stack_steps_along_the_normal():
    data = np.zeros((12, 8, 8), np.float32)
    data[6:] = 1.0  # a step between the layers z=5 and z=6
    vol = Volume(data, (1.0, 1.0, 1.0))
    thin = virtual_section(vol, Plane((4.0, 3.5, 3.5), (1, 0, 0)), 1.0, (8, 8))
    assert np.allclose(thin.data, 0.0)
    thick = virtual_section(vol, Plane((5.0, 3.5, 3.5), (1, 0, 0)), 1.0, (8, 8), thickness=4.0)
    depths = (np.arange(8) + 0.5) / 8 * 4 - 2  # 8 samples per 4 µm: two per voxel
    assert np.allclose(thick.data, np.clip(5.0 + depths - 5, 0, 1).mean())
    stack = virtual_stack(
        vol, Plane((5.5, 3.5, 3.5), (1, 0, 0)), 1.0, count=4, step=1.0, shape=(8, 8)
    )
    assert stack.shape == (4, 8, 8) and stack.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(stack.data[:, 0, 0], [0, 0, 1, 1])


class _CountingArray:
    """A numpy array that records which 16^3 chunks are read from it (stands in for a chunked file).

    dask may fuse a slice of a chunk into one read of the source, so the record is
    the set of storage chunks each read overlaps (empty reads, dask's dtype probes, skipped).
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads: set[tuple[int, int, int]] = set()

    def __getitem__(self, key):
        bounds = [k.indices(n)[:2] for k, n in zip(key, self.shape)]
        if all(stop > start for start, stop in bounds):
            ranges = [range(start // 16 * 16, stop, 16) for start, stop in bounds]
            self.reads.update((z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2])
        return self.data[key]


def test_only_chunks_near_the_plane_are_read():
    rng = np.random.default_rng(0)
    source = _CountingArray(rng.random((64, 64, 64), dtype=np.float32))
    lazy = Volume(da.from_array(source, chunks=16, asarray=False), (2.0, 2.0, 2.0))
    axial = virtual_section(lazy, Plane((80.0, 63.0, 63.0), (1, 0, 0)), 2.0, shape=(64, 64))
    assert source.reads and {z for z, _, _ in source.reads} == {
        32
    }  # only the chunk layer holding z index 40
    assert np.allclose(axial.data, source.data[40], atol=1e-5)

    source.reads.clear()
    plane = Plane((64.0, 63.0, 63.0), normal_from_angles(20, 40))
    oblique = virtual_section(lazy, plane, 2.0, thickness=4.0)
    eager = virtual_section(Volume(source.data, (2.0, 2.0, 2.0)), plane, 2.0, thickness=4.0)
    np.testing.assert_allclose(oblique.data, eager.data, atol=1e-6)
    # A chunk is read only if the slab passes within one chunk diagonal of its centre.
    half_diag = math.sqrt(3) * 16 * 2.0 / 2
    for z, y, x in source.reads:
        centre = (np.array([z, y, x]) + 7.5) * 2.0
        assert abs(np.dot(centre - plane.point, plane.normal)) <= 2 * half_diag
    assert len(source.reads) < 0.7 * 64


def test_plane_and_sampling_refuse_bad_arguments():
    vol = Volume(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match="zero vector"):
        Plane((0, 0, 0), (0, 0, 0))
    with pytest.raises(InputError, match="pixel size"):
        virtual_section(vol, Plane((0, 0, 0), (1, 0, 0)), pixel_size=0)
    with pytest.raises(InputError, match="thickness"):
        virtual_section(vol, Plane((0, 0, 0), (1, 0, 0)), 1.0, thickness=-1)
    with pytest.raises(InputError, match="expected a grey 3D volume"):
        virtual_section(
            Volume(np.zeros((4, 4, 3), np.uint8), axes="yxc"), Plane((0, 0, 0), (1, 0, 0)), 1.0
        )


def test_sample_section_then_match_recovers_the_plane(tmp_path, capsys):
    """The whole workflow from the command line, with a cone prior to keep it fast."""
    vol, sec, truth_path, out = (
        tmp_path / "phantom.zarr",
        tmp_path / "section.tif",
        tmp_path / "truth.json",
        tmp_path / "match",
    )
    assert (
        main(
            [
                "sample",
                "section",
                str(sec),
                "--volume",
                str(vol),
                "--truth",
                str(truth_path),
                "--shape",
                "48",
                "48",
                "48",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    section = read_volume(sec)
    assert section.axes == "yxc" and section.dtype == np.uint8 and section.spacing == (5.0, 5.0)
    truth = json.loads(truth_path.read_text())
    assert truth["tilt_deg"] <= 25
    # The prior: a cutting axis known to within 6 degrees, searched over a 12 degree cone.
    axis = normal_from_angles(truth["tilt_deg"] + 6, truth["azimuth_deg"])
    argv = [
        "histology",
        "match",
        str(vol),
        str(sec),
        "--axis",
        *map(str, axis),
        "--cone",
        "12",
        "--candidates",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "match.json").read_text())
    best = report["best"]
    error = angle_between(best["plane"]["normal"], truth["plane"]["normal"])
    assert error < 3.0, (error, best, truth)
    assert abs(best["offset_um"] - truth["offset_um"]) <= 2 * 5.0
    assert abs(best["section_to_plane"]["scale"] - truth["section_to_plane"]["scale"]) < 0.1
    assert report["candidates"] and best["landscape"]["nmi_by_offset"][5] == max(
        best["landscape"]["nmi_by_offset"]
    )
    assert read_volume(out / "section_on_virtual.tif").axes == "yxc"
    assert (
        read_volume(out / "virtual_section.tif").ndim == 2
        and (out / "overlay.png").stat().st_size > 0
    )


def test_histology_section_cli_writes_plane_and_stack(tmp_path, capsys):
    data = np.tile(np.arange(16, dtype=np.float32)[:, None, None], (1, 10, 10))
    write_volume(tmp_path / "v.zarr", data, spacing=(2.0, 2.0, 2.0))
    assert (
        main(
            [
                "histology",
                "section",
                str(tmp_path / "v.zarr"),
                "--normal",
                "1",
                "0",
                "0",
                "--point",
                "10",
                "9",
                "9",
                "--out",
                str(tmp_path / "c.tif"),
            ]
        )
        == 0
    )
    cut = read_volume(tmp_path / "c.tif")
    assert cut.spacing == (2.0, 2.0) and np.allclose(cut.data[1:-1, 1:-1], 5.0)
    assert (
        main(
            [
                "histology",
                "section",
                str(tmp_path / "v.zarr"),
                "--angles",
                "0",
                "0",
                "--offset",
                "-4",
                "--count",
                "3",
                "--step",
                "2",
                "--out",
                str(tmp_path / "s.zarr"),
            ]
        )
        == 0
    )
    stack = read_volume(tmp_path / "s.zarr")
    assert stack.shape[0] == 3 and np.allclose(stack.data[:, 5, 5], [4.5, 5.5, 6.5])


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdlma: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_give_one_line_and_write_nothing(tmp_path, capsys):
    import nibabel as nib
    from PIL import Image

    rng = np.random.default_rng(1)
    tifffile.imwrite(
        tmp_path / "nosize.tif", rng.random((16, 16, 16), dtype=np.float32)
    )  # no resolution tags
    write_volume(
        tmp_path / "vol.zarr", rng.random((16, 16, 16), dtype=np.float32), spacing=(5.0, 5.0, 5.0)
    )
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "nosize.png")
    big = Volume(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (50.0, 50.0), axes="yxc")
    write_volume(tmp_path / "big.tif", big)
    nib.save(
        nib.Nifti1Image(rng.random((8, 8, 8, 2), dtype=np.float32), np.eye(4)),
        tmp_path / "4d.nii.gz",
    )
    out = tmp_path / "out"

    err = _error(
        capsys,
        [
            "histology",
            "match",
            str(tmp_path / "nosize.tif"),
            str(tmp_path / "big.tif"),
            "--out",
            str(out),
        ],
    )
    assert "nosize.tif" in err and "voxel size" in err and "--voxel-size" in err
    err = _error(
        capsys,
        [
            "histology",
            "match",
            str(tmp_path / "vol.zarr"),
            str(tmp_path / "nosize.png"),
            "--out",
            str(out),
        ],
    )
    assert "nosize.png" in err and "--pixel-size" in err
    err = _error(
        capsys,
        [
            "histology",
            "match",
            str(tmp_path / "vol.zarr"),
            str(tmp_path / "big.tif"),
            "--axis",
            "1",
            "0",
            "0",
            "--out",
            str(out),
        ],
    )
    assert "larger" in err or "longer than" in err
    err = _error(
        capsys,
        [
            "histology",
            "match",
            str(tmp_path / "vol.zarr"),
            str(tmp_path / "big.tif"),
            "--axis",
            "1",
            "0",
            "0",
            "--cone",
            "-5",
            "--out",
            str(out),
        ],
    )
    assert "cone" in err
    err = _error(
        capsys,
        [
            "histology",
            "match",
            str(tmp_path / "4d.nii.gz"),
            str(tmp_path / "big.tif"),
            "--out",
            str(out),
        ],
    )
    assert "4d.nii.gz" in err
    err = _error(
        capsys,
        [
            "histology",
            "section",
            str(tmp_path / "vol.zarr"),
            "--angles",
            "0",
            "0",
            "--point",
            "1",
            "2",
            "3",
            "--out",
            str(out),
        ],
    )
    assert "--point" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    # The voxel size can be given on the command line instead.
    assert (
        main(
            [
                "histology",
                "section",
                str(tmp_path / "nosize.tif"),
                "--normal",
                "1",
                "0",
                "0",
                "--voxel-size",
                "2",
                "--out",
                str(tmp_path / "ok.tif"),
            ]
        )
        == 0
    )
    assert read_volume(tmp_path / "ok.tif").spacing == (2.0, 2.0)


@pytest.mark.slow
def test_no_prior_two_stage_search_recovers_the_plane(monkeypatch):
    """Without a cutting axis (the whole sphere, searched in two stages) the plane is still found."""
    from unified_framework.data.section import make_section_sample
    from unified_framework.histology import match
    from unified_framework.histology.match import locate_section

    monkeypatch.setattr(match, "TWO_STAGE_CONE", 60.0)

    volume, section, truth = make_section_sample((64, 64, 64), seed=1001)
    result = locate_section(volume, section, axis=None, candidates=2)
    assert result.searched["two_stage"]
    assert angle_between(result.best.plane.normal, truth["plane"]["normal"]) < 3.0
    assert abs(result.best.offset_um - truth["offset_um"]) <= 3 * 5.0


def _scorer_and_true_parameters():
    """A 48³ section sample's scorer, volume centre and the true parameter vector
    (normal, offset, in-plane rotation, scale, translation, in-plane axis u)."""
    import torch

    from unified_framework.data.section import make_section_sample
    from unified_framework.histology import match

    volume, section, truth = make_section_sample((48, 48, 48), seed=7, torn=False)
    scorer = match._Scorer(
        match._binned(volume, 48), match.section_grey(section), 5.0, 16, torch.device("cpu")
    )
    t = truth["section_to_plane"]
    right = np.array(
        [
            *truth["plane"]["normal"],
            truth["offset_um"],
            t["rotation_deg"],
            t["scale"],
            *t["translation_um"],
            *truth["plane"]["u"],
        ]
    )
    return scorer, match.volume_centre(volume), right


def test_rerank_turns_a_candidate_to_its_best_in_plane_rotation():
    """The medium level re-scores every in-plane rotation of a global candidate (the coarse score often prefers a wrong one)."""
    from unified_framework.histology import match

    scorer, centre, right = _scorer_and_true_parameters()
    wrong = right.copy()
    wrong[4] += 120  # same plane and centre of rotation (the tissue centroid is (0, 0) here)
    turned = match._rerotate(scorer, centre, wrong[None], np.arange(0, 360, 15.0), np.zeros(2))[0]
    assert abs((turned[4] - right[4] + 180) % 360 - 180) < 1e-6
    scores = scorer.nmi(match._world_of(scorer, centre, np.stack([wrong, turned])))
    assert scores[1] > scores[0] + 0.02


def test_offset_scan_moves_a_candidate_back_to_the_true_offset():
    """A candidate at the right orientation but several voxels off in offset is moved back before the local search."""
    from unified_framework.histology import match

    scorer, centre, right = _scorer_and_true_parameters()
    off = right.copy()
    off[3] += 35.0  # 7 voxels
    moved = match._scan_offsets(scorer, centre, off[None], 50.0, 5.0)[0]
    assert abs(moved[3] - right[3]) <= 5.0
    assert np.array_equal(np.delete(moved, 3), np.delete(off, 3))
