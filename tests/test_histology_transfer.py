"""Deformable 2D registration of a located section and label transfer both ways (issue 17, items 3-4)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from unified_framework.cli.main import main
from unified_framework.data.section import make_section_sample
from unified_framework.errors import InputError
from unified_framework.histology import Plane, normal_from_angles
from unified_framework.histology.register import invert2d, register_section, warp2d
from unified_framework.histology.transfer import SectionMap, read_annotations
from unified_framework.io import read_volume

#: Least Dice per tissue class of volume labels drawn on the section against the true classes.
DICE_MIN = 0.75
#: Largest median / 90th percentile distance (voxels) of annotated pixels mapped into the volume.
POINT_MEDIAN_MAX, POINT_P90_MAX = 1.5, 3.0


def _smooth_pair(shift_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A blob image and a copy warped by a smooth known field (µm = px here)."""
    rng = np.random.default_rng(3)
    fixed = ndimage.gaussian_filter(rng.random((48, 48)), 2.5).astype(np.float32)
    yy, xx = np.mgrid[:48, :48]
    truth = np.stack(
        [shift_px * np.sin(xx / 48 * np.pi), shift_px * np.cos(yy / 48 * np.pi)]
    ).astype(np.float32)
    # moving(p + u(p)) = fixed(p)  <=>  moving = fixed warped by the inverse field.
    moving = warp2d(fixed, invert2d(truth, 1.0), 1.0)
    return fixed, moving, truth


@pytest.mark.parametrize("method", ["bspline", "convexadam"])
def test_register_section_recovers_a_known_smooth_field(method):
    fixed, moving, truth = _smooth_pair(2.0)
    # Contrast inverted: the figures must not assume equal intensities.
    result = register_section(fixed, 1 - moving, 1.0, method, device="cpu")
    inner = (slice(8, -8), slice(8, -8))
    error = np.linalg.norm(result.field - truth, axis=0)[inner]
    before = np.linalg.norm(truth, axis=0)[inner]
    assert np.median(error) < 0.5 * np.median(before), (np.median(error), np.median(before))
    q = result.quality
    assert q["jacobian"]["folding_fraction"] < 0.01
    assert q["images"]["mi"]["after"] > q["images"]["mi"]["before"]
    assert result.warped.shape == fixed.shape and result.field.shape == (2, 48, 48)


def test_register_section_refuses_bad_input():
    with pytest.raises(InputError, match="method"):
        register_section(np.zeros((20, 20)), np.zeros((20, 20)), 1.0, "elastix")
    with pytest.raises(InputError, match="2D images on one grid"):
        register_section(np.zeros((20, 20)), np.zeros((20, 21)), 1.0, "none")
    with pytest.raises(InputError, match="too small"):
        register_section(np.zeros((8, 8)), np.zeros((8, 8)), 1.0, "convexadam")


def test_section_map_follows_the_true_similarity():
    """With the true plane and transform, pixels land where the sample put them (elastic part aside)."""
    _, section, truth = make_section_sample((40, 40, 40), seed=5, elastic=0.0, maps=True)
    m = SectionMap.from_match(
        {"plane": truth["plane"], "section_to_plane": truth["section_to_plane"]},
        section.spatial_shape,
        section.spacing,
        (40, 40),
        5.0,
    )
    error = np.linalg.norm(m.world_grid() - truth["world_um"], axis=-1)
    assert error.max() < 1e-6


def test_read_annotations_polygons_and_errors(tmp_path):
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps([{"label": 2, "points": [[1, 1], [6, 1], [6, 4], [1, 4]]}]))
    image = read_annotations(plain, (8, 8))
    assert image[2, 3] == 2 and image[6, 3] == 0 and image.sum() > 0
    geo = tmp_path / "g.geojson"
    geo.write_text(
        json.dumps(
            {
                "features": [
                    {
                        "properties": {"label": 7},
                        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [3, 0], [3, 3]]]},
                    }
                ]
            }
        )
    )
    assert read_annotations(geo, (8, 8)).max() == 7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"label": 1, "points": [[0, 0], [1, 1]]}]))
    with pytest.raises(InputError, match="at least 3"):
        read_annotations(bad, (8, 8))
    bad.write_text(json.dumps([{"points": [[0, 0], [1, 1], [2, 0]]}]))
    with pytest.raises(InputError, match="polygon 1"):
        read_annotations(bad, (8, 8))


def test_match_registers_and_transfers_labels_both_ways(tmp_path, capsys):
    """The whole workflow on the sample: volume labels agree with the true stain classes, points land near their truth."""
    w = tmp_path
    assert (
        main(
            [
                "sample",
                "section",
                str(w / "section.tif"),
                "--volume",
                str(w / "phantom.zarr"),
                "--truth",
                str(w / "truth.json"),
                "--shape",
                "48",
                "48",
                "48",
                "--seed",
                "7",
                "--labels",
                str(w / "classes.tif"),
                "--volume-labels",
                str(w / "labels.zarr"),
            ]
        )
        == 0
    )
    truth = json.loads((w / "truth.json").read_text())
    axis = normal_from_angles(truth["tilt_deg"] + 4, truth["azimuth_deg"])
    argv = ["histology", "match", str(w / "phantom.zarr"), str(w / "section.tif")]
    argv += ["--axis", *map(str, axis), "--cone", "8", "--candidates", "2", "--register", "bspline"]
    argv += ["--volume-labels", str(w / "labels.zarr"), "--section-labels", str(w / "classes.tif")]
    assert main([*argv, "--sparse-volume", "--out", str(w / "match")]) == 0
    out = w / "match"
    printed = capsys.readouterr().out
    assert "folding voxels" in printed and "NCC" in printed
    report = json.loads((out / "match.json").read_text())
    quality = json.loads((out / "registration.json").read_text())
    assert quality["method"] == "bspline" and quality["jacobian"]["folding_fraction"] < 0.01
    assert quality["images"]["mi"]["after"] >= quality["images"]["mi"]["before"]
    assert report["registration"]["images"] == quality["images"]
    section = read_volume(w / "section.tif")
    assert read_volume(out / "section_warped.tif").axes == "yxc"
    assert (out / "field.mha").stat().st_size > 0 and (out / "labels_overlay.png").is_file()

    # (a) volume labels drawn on the section: Dice per tissue class against the true classes.
    on_section = np.asarray(read_volume(out / "labels_on_section.tif").data)
    classes = np.asarray(read_volume(w / "classes.tif").data)
    assert on_section.shape == section.spatial_shape
    tissue = classes != 4
    for label in (1, 2):
        a, b = (on_section == label) & tissue, classes == label
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice > DICE_MIN, (label, dice)

    # (b) section annotations mapped into the volume land near their true 3D positions.
    _, _, maps = make_section_sample((48, 48, 48), seed=7, maps=True)
    rows = [r for r in csv.DictReader((out / "section_points.csv").open()) if r["label"] != "4"]
    world = np.array([[float(r[f"world_{a}_um"]) for a in "zyx"] for r in rows])
    rc = np.array([[int(r["row"]), int(r["col"])] for r in rows])
    error = np.linalg.norm(world - maps["world_um"][rc[:, 0], rc[:, 1]], axis=1) / 5.0
    assert np.median(error) < POINT_MEDIAN_MAX and np.percentile(error, 90) < POINT_P90_MAX
    sparse = np.asarray(read_volume(out / "section_labels_volume.zarr").data)
    assert set(np.unique(sparse)) <= {0, 1, 2, 3, 4} and (sparse == 2).any()
    assert "transfer" in report and "1" in report["transfer"]["section_labels"]["per_label"]

    # The transfer verb redoes (b) from the result folder, from polygons, into another folder.
    polygons = w / "polygons.json"
    polygons.write_text(
        json.dumps([{"label": 9, "points": [[10, 10], [30, 10], [30, 30], [10, 30]]}])
    )
    again = w / "again"
    assert (
        main(
            [
                "histology",
                "transfer",
                str(out),
                "--section-labels",
                str(polygons),
                "--out",
                str(again),
            ]
        )
        == 0
    )
    summary = json.loads((again / "transfer.json").read_text())
    centroid = summary["section_labels"]["per_label"]["9"]["centroid_world_um"]
    expected = maps["world_um"][10:31, 10:31].reshape(-1, 3).mean(0)
    assert np.linalg.norm(np.array(centroid) - expected) / 5.0 < POINT_MEDIAN_MAX
    # Nothing to do / bad annotations: one line, nothing written.
    assert main(["histology", "transfer", str(out), "--out", str(w / "none")]) == 2
    (w / "bad.json").write_text("[]")
    assert (
        main(
            [
                "histology",
                "transfer",
                str(out),
                "--section-labels",
                str(w / "bad.json"),
                "--out",
                str(again),
            ]
        )
        == 2
    )
    assert "bad.json" in capsys.readouterr().err
    assert sorted(p.name for p in again.iterdir()) == ["section_points.csv", "transfer.json"]


def test_plane_frame_of_the_map_is_the_plane_of_the_match():
    m = SectionMap(
        Plane((0, 0, 0), (1, 0, 0)), 90.0, 1.0, (0.0, 0.0), (3, 3), (1.0, 1.0), (3, 3), 1.0
    )
    # Rotated 90 degrees: the section's row direction runs along the plane's u (world x).
    moved = m.world_of_pixels(np.array([[2.0, 1.0]])) - m.world_of_pixels(np.array([[1.0, 1.0]]))
    assert np.allclose(moved, [[0, 0, 1]])
