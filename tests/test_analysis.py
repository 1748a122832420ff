"""Degradation analysis against the analytic degrading-cylinder phantom.

Tolerances (stated here, also in docs/analysis.md): volumes and surface areas 2 %,
mean layer thickness 5 % (layer 6 voxels), depth 5 %, BIC 1.5 percentage points,
shell BV/TV 0.02 absolute, degraded fraction 0.01 absolute.
"""

from __future__ import annotations

import numpy as np
import pytest

from unified_framework.analysis import (
    ClassRoles,
    local_thickness,
    quantify,
    rasterize_cylinder,
    resolve_roles,
)
from unified_framework.data import make_implant_phantom
from unified_framework.data.degrading import make_degrading_cylinder, make_degrading_series
from unified_framework.errors import InputError

SHAPE = (12, 112, 112)
SPACING = (5.0, 5.0, 5.0)


def _initial(truth, shape, spacing):
    box = tuple(slice(0, n) for n in shape)
    return rasterize_cylinder(truth["cylinder"], shape, spacing, box)


def _check(values, truth, shells=None):
    for key in ("residual_volume_mm3", "layer_volume_mm3", "implant_volume_mm3"):
        assert values[key] == pytest.approx(truth[key], rel=0.02), key
    for key in ("residual_surface_mm2", "implant_surface_mm2"):
        assert values[key] == pytest.approx(truth[key], rel=0.02), key
    assert values["layer_thickness_mean_um"] == pytest.approx(
        truth["layer_thickness_mean_um"], rel=0.05
    )
    assert values["bic_percent"] == pytest.approx(truth["bic_percent"], abs=1.5)
    assert values["fragments"] == truth["fragments"]
    if shells is not None:
        for got, want in zip(shells, truth["shells"]):
            assert got["bv_tv"] == pytest.approx(want["bv_tv"], abs=0.02)


@pytest.fixture(scope="module")
def cylinder():
    return make_degrading_cylinder(SHAPE, SPACING)


def test_quantities_match_analytic_truth(cylinder):
    labels, truth = cylinder
    result = quantify(
        labels,
        SPACING,
        shell_width=truth["shell_width_um"],
        shells=3,
        initial=_initial(truth, SHAPE, SPACING),
        implantation_date="2024-01-01",
        scan_date="2024-01-31",
    )
    v = result.values
    _check(v, truth, result.shells)
    assert v["initial_volume_mm3"] == pytest.approx(truth["initial_volume_mm3"], rel=0.02)
    assert v["degraded_fraction"] == pytest.approx(truth["degraded_fraction"], abs=0.01)
    assert v["degradation_depth_um"] == pytest.approx(truth["degradation_depth_um"], rel=0.05)
    assert v["equivalent_depth_um"] == pytest.approx(truth["equivalent_depth_um"], rel=0.05)
    assert v["days"] == 30
    assert v["degradation_rate_um_per_day"] == pytest.approx(v["degradation_depth_um"] / 30)
    assert sum(result.histogram["fraction"]) == pytest.approx(1.0)
    row = result.row()
    assert "bv_tv_0_30um" in row and row["fragments"] == 1


def test_anisotropic_voxels_give_the_same_physical_answer():
    spacing = (10.0, 5.0, 5.0)
    labels, truth = make_degrading_cylinder((6, 112, 112), spacing)
    result = quantify(labels, spacing, shell_width=truth["shell_width_um"], shells=3)
    _check(result.values, truth, result.shells)
    # in-plane anisotropy: the geometry is in µm, the layer is 5 voxels thick along x
    spacing = (5.0, 4.0, 6.0)
    labels, truth = make_degrading_cylinder((8, 140, 94), spacing, layer=30.0, shell_width=30.0)
    result = quantify(labels, spacing, shell_width=30.0, shells=3)
    _check(result.values, truth, result.shells)


def test_fragments_are_counted():
    labels, truth = make_degrading_cylinder((30, 64, 64), SPACING, fragments=3, fractions=(0.5,))
    result = quantify(labels, SPACING, shells=0)
    assert result.values["fragments"] == truth["fragments"] == 3
    assert result.values["residual_volume_mm3"] == pytest.approx(
        truth["residual_volume_mm3"], rel=0.02
    )


def test_region_of_interest_mask_and_band(cylinder):
    labels, truth = cylinder
    half = np.zeros(labels.shape, bool)
    half[: SHAPE[0] // 2] = True
    full = quantify(labels, SPACING, shells=0)
    part = quantify(labels, SPACING, shells=0, roi=half)
    for key in ("residual_volume_mm3", "layer_volume_mm3", "implant_surface_mm2"):
        assert part.values[key] == pytest.approx(full.values[key] / 2, rel=0.03), key
    # a band reaching only 2 shells out: no bone of the third shell
    w = truth["shell_width_um"]
    band = quantify(labels, SPACING, shells=3, shell_width=w, band=(0.0, 2 * w))
    assert band.shells[2]["tissue_mm3"] == pytest.approx(0.0, abs=1e-6)
    assert band.values["residual_volume_mm3"] == pytest.approx(full.values["residual_volume_mm3"])


def test_cylinder_fit_recovers_the_initial_implant():
    # no degradation yet: the fitted cylinder is the implant itself
    spacing = (10.0, 5.0, 5.0)
    labels, truth = make_degrading_cylinder((24, 96, 96), spacing, depth=0.0)
    result = quantify(labels, spacing, shells=0, cylinder=True)
    fit = result.settings["cylinder"]
    assert abs(fit["axis"][0]) == pytest.approx(1.0, abs=1e-3)
    assert fit["radius_um"] == pytest.approx(truth["initial_radius_um"], rel=0.05)
    # with the nominal radius the degradation of a later scan is found
    labels, truth = make_degrading_cylinder((24, 96, 96), spacing, depth=20.0)
    result = quantify(
        labels, spacing, shells=0, cylinder=True, initial_radius=truth["initial_radius_um"], days=10
    )
    assert result.values["degradation_depth_um"] == pytest.approx(20.0, rel=0.08)
    assert result.values["degradation_rate_um_per_day"] == pytest.approx(2.0, rel=0.08)


def test_local_thickness_is_porespy_hildebrand_rueegsegger():
    plate = np.zeros((4, 20, 20), bool)
    plate[:, :, 6:12] = True  # 6 voxels thick
    bonej = local_thickness(plate, (1.0, 1.0, 1.0), convention="bonej")
    assert set(np.unique(bonej[plate]).tolist()) == {6.0}
    unbiased = local_thickness(plate, (2.0, 2.0, 2.0))
    assert float(unbiased[plate].max()) == pytest.approx(12.0 - 0.5)
    with pytest.raises(InputError, match="convention"):
        local_thickness(plate, (1, 1, 1), convention="imagej")


def test_roles_by_number_and_name(cylinder):
    labels, _ = cylinder
    swapped = labels.copy()
    swapped[labels == 2], swapped[labels == 3] = 7, 5
    roles = resolve_roles("residual=7,layer=5")
    a = quantify(labels, SPACING, shells=0).values
    b = quantify(swapped, SPACING, shells=0, roles=roles).values
    assert a["residual_volume_mm3"] == b["residual_volume_mm3"]
    named = resolve_roles(None, ["background", "bone", "residual implant", "degradation layer"])
    assert named == ClassRoles()
    assert resolve_roles("layer=degradation layer", ["bg", "bone", "degradation layer"]).layer == 2
    with pytest.raises(InputError, match="unknown role"):
        resolve_roles("screw=2")


def test_bad_input_has_clear_messages(cylinder):
    labels, _ = cylinder
    no_implant = np.where(labels >= 2, 0, labels).astype(np.uint8)
    with pytest.raises(InputError, match="no implant in the labels"):
        quantify(no_implant, SPACING, name="scan.tif")
    empty = np.zeros(labels.shape, bool)
    with pytest.raises(InputError, match="region of interest is empty"):
        quantify(labels, SPACING, roi=empty)
    with pytest.raises(InputError, match="roi: shape"):
        quantify(labels, SPACING, roi=np.ones((2, 2, 2), bool))
    with pytest.raises(InputError, match="not after"):
        quantify(labels, SPACING, implantation_date="2024-02-01", scan_date="2024-01-01")
    with pytest.raises(InputError, match="3D"):
        quantify(labels[0], SPACING)
    for message in ("no implant in the labels",):
        try:
            quantify(no_implant, SPACING, name="scan.tif")
        except InputError as exc:
            assert "\n" not in str(exc) and message in str(exc)


def test_screw_phantom_is_consistent_across_resolutions():
    # The same anatomy sampled at 5 µm and at 10x5x5 µm: the physical answers agree.
    _, fine = make_implant_phantom((48, 48, 48), seed=0, spacing=(5.0, 5.0, 5.0))
    _, coarse = make_implant_phantom((24, 48, 48), seed=0, spacing=(10.0, 5.0, 5.0))
    a = quantify(fine, (5.0, 5.0, 5.0), shells=2, shell_width=20.0).values
    b = quantify(coarse, (10.0, 5.0, 5.0), shells=2, shell_width=20.0).values
    for key in ("residual_volume_mm3", "layer_volume_mm3", "implant_surface_mm2"):
        assert b[key] == pytest.approx(a[key], rel=0.06), key
    assert b["layer_thickness_mean_um"] == pytest.approx(a["layer_thickness_mean_um"], rel=0.12)


def test_series_recedes_at_the_known_rate():
    series = make_degrading_series([0, 20], rate=1.0, shape=(6, 96, 96))
    (l0, t0), (l1, t1) = series
    assert t1["degradation_depth_um"] - t0["degradation_depth_um"] == 20.0
    v0 = quantify(l0, SPACING, shells=0).values["residual_volume_mm3"]
    v1 = quantify(l1, SPACING, shells=0).values["residual_volume_mm3"]
    assert v1 / v0 == pytest.approx(t1["residual_volume_mm3"] / t0["residual_volume_mm3"], rel=0.03)


def test_uncertainty_ranges_hold_the_truth_of_a_blurred_segmentation():
    from scipy import ndimage

    from unified_framework.analysis.uncertainty import quantify_uncertainty

    labels, truth = make_degrading_cylinder((4, 112, 112), SPACING)
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    prob = np.stack([ndimage.gaussian_filter(p, (0, 1.2, 1.2)) for p in onehot])
    prob /= prob.sum(axis=0)
    u = quantify_uncertainty(labels, SPACING, prob.astype(np.float16), shells=2, shell_width=30)
    assert 0 < u.uncertain_fraction < 0.2
    for key in (
        "residual_volume_mm3",
        "layer_volume_mm3",
        "layer_thickness_mean_um",
        "bic_percent",
    ):
        low, high = u.ranges[key]
        assert low <= u.result.values[key] <= high, key
        assert low < high, key
    low, high = u.ranges["residual_volume_mm3"]
    assert low <= truth["residual_volume_mm3"] <= high
    # entropy only: neighbours give the alternatives
    entropy = -(prob * np.log(np.clip(prob, 1e-6, 1))).sum(axis=0) / np.log(4)
    e = quantify_uncertainty(labels, SPACING, entropy=entropy, shells=0)
    assert e.ranges["layer_volume_mm3"][0] < e.ranges["layer_volume_mm3"][1]
    with pytest.raises(InputError, match="probabilities: shape"):
        quantify_uncertainty(labels, SPACING, prob[:, :2])


def test_time_series_registers_and_recovers_the_rate():
    from unified_framework.analysis.timeseries import analyse_series

    series = make_degrading_series(
        [0, 40], rate=1.0, shape=(16, 96, 96), layer=20.0, shell_width=20.0
    )
    r0 = series[0][1]["initial_radius_um"]
    out = analyse_series(
        [s[0] for s in series],
        SPACING,
        [0, 40],
        shells=1,
        shell_width=20.0,
        cylinder=True,
        initial_radius=r0,
    )
    # the known motion (10 µm along y, -5 µm along x) is found
    translation = np.asarray(out.registration[0]["affine"])[:3, 3]
    assert translation[1:] == pytest.approx([10.0, -5.0], abs=1.5)
    assert out.rates["degradation_depth_um"] == pytest.approx(1.0, rel=0.1)
    assert out.change["transitions_mm3"]["residual->layer"] > 0
    assert out.change_map.shape == series[0][0].shape
    assert out.table()[1]["change_residual_volume_mm3"] < 0
    with pytest.raises(InputError, match="at least two"):
        analyse_series([series[0][0]], SPACING, [0])


def test_compare_methods_against_truth(cylinder):
    from unified_framework.analysis.compare import compare_methods

    labels, truth = cylinder
    thick = labels.copy()
    thick[ndimage_dilate(labels == 3) & (labels == 1)] = 3
    table = compare_methods(
        {"exact": labels, "thicker layer": thick}, SPACING, truth=truth, shells=0
    )
    err = table["relative_error"]
    assert abs(err["residual_volume_mm3"]["exact"]) < 0.02
    assert err["layer_volume_mm3"]["thicker layer"] > err["layer_volume_mm3"]["exact"]
    gt = compare_methods({"exact": labels}, SPACING, truth=labels, shells=0)
    assert gt["relative_error"]["layer_volume_mm3"]["exact"] == 0


def ndimage_dilate(mask):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=2)


def test_report_json_and_csv(tmp_path, cylinder):
    from unified_framework.analysis.report import read_report, write_csv, write_json

    labels, _ = cylinder
    result = quantify(labels, SPACING, shells=2, shell_width=30)
    write_json(tmp_path / "r.json", {"samples": [{"name": "a", **result.to_dict()}]})
    write_csv(tmp_path / "r.csv", [{"sample": "a", **result.row()}])
    doc = read_report(tmp_path / "r.json")
    assert doc["samples"][0]["values"]["fragments"] == 1
    header, row = (tmp_path / "r.csv").read_text().splitlines()
    assert header.startswith("sample,roi_volume_mm3") and row.startswith("a,")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not an analysis report"):
        read_report(tmp_path / "bad.json")


def test_screw_fit_recovers_pitch_radius_and_depth():
    # Tolerances: pitch 1 %, core radius and thread depth one voxel; with the nominal
    # major radius the degraded fraction within 0.01 and the depth within 5 % of the
    # values measured with the exact initial screw.
    from unified_framework.analysis.screw import fit_screw, rasterize_screw
    from unified_framework.data.degrading import make_degrading_screw

    labels, truth = make_degrading_screw((48, 96, 96), SPACING, depth=0.0)
    fit = fit_screw(labels == 2, SPACING)
    want = truth["screw"]
    assert fit["pitch_um"] == pytest.approx(want["pitch_um"], rel=0.01)
    assert fit["handedness"] == want["handedness"]
    assert fit["fitted_core_radius_um"] == pytest.approx(want["core_radius_um"], abs=5.0)
    assert fit["thread_depth_um"] == pytest.approx(want["thread_depth_um"], abs=5.0)
    # the fitted screw, rasterised, is the implant
    box = tuple(slice(0, n) for n in labels.shape)
    overlap = rasterize_screw(
        {**fit, "core_radius_um": fit["fitted_core_radius_um"]}, labels.shape, SPACING, box
    )
    dice = 2 * (overlap & (labels == 2)).sum() / (overlap.sum() + (labels == 2).sum())
    assert dice > 0.97
    # degraded by 15 µm: the screw with the nominal radius gives the degradation
    labels, truth = make_degrading_screw((48, 96, 96), SPACING, depth=15.0)
    exact = rasterize_screw(truth["screw"], labels.shape, SPACING, box)
    ref = quantify(labels, SPACING, shells=0, initial=exact, days=10).values
    got = quantify(
        labels, SPACING, shells=0, screw=True, initial_radius=truth["initial_radius_um"], days=10
    )
    v = got.values
    assert got.settings["initial"] == "screw" and got.settings["screw"]["pitch_um"] > 0
    assert v["degraded_fraction"] == pytest.approx(truth["degraded_fraction"], abs=0.01)
    assert v["degradation_depth_um"] == pytest.approx(ref["degradation_depth_um"], rel=0.05)
    assert v["degradation_rate_um_per_day"] == pytest.approx(v["degradation_depth_um"] / 10)
    # a cylinder of the nominal radius overestimates the degradation of a screw
    cyl = quantify(
        labels, SPACING, shells=0, cylinder=True, initial_radius=truth["initial_radius_um"]
    )
    assert cyl.values["degraded_fraction"] > truth["degraded_fraction"] + 0.05
    with pytest.raises(InputError, match="not both"):
        quantify(labels, SPACING, shells=0, screw=True, cylinder=True)


def test_sampled_uncertainty_holds_the_truth_and_narrows_as_probabilities_sharpen():
    from scipy import ndimage

    from unified_framework.analysis.uncertainty import quantify_uncertainty, sample_labels

    labels, truth = make_degrading_cylinder((4, 112, 112), SPACING)
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    widths = {}
    for sigma in (0.6, 1.2):
        prob = np.stack([ndimage.gaussian_filter(p, (0, sigma, sigma)) for p in onehot])
        prob /= prob.sum(axis=0)
        u = quantify_uncertainty(
            labels, SPACING, prob, shells=1, shell_width=30, samples=8, seed=1, smooth=1.5
        )
        s = u.sampling
        assert s["samples"] == s["valid"] == 8 and s["smooth_voxels"] == 1.5
        for key in ("residual_volume_mm3", "layer_volume_mm3", "bic_percent"):
            assert s["low"][key] <= truth[key] <= s["high"][key], (sigma, key)
            assert s["low"][key] <= s["mean"][key] <= s["high"][key]
        widths[sigma] = {
            k: s["high"][k] - s["low"][k] for k in ("residual_volume_mm3", "bic_percent")
        }
        assert "sampling" in u.to_dict()["uncertainty"]
    for key, width in widths[0.6].items():
        assert 0 < width < widths[1.2][key], key
    # the draws are reproducible and follow the probabilities
    again = sample_labels(prob, 1, 1.5, sample=3)
    assert np.array_equal(again, sample_labels(prob, 1, 1.5, sample=3))
    assert not np.array_equal(again, sample_labels(prob, 2, 1.5, sample=3))
    with pytest.raises(InputError, match="entropy alone"):
        quantify_uncertainty(labels, SPACING, entropy=np.zeros(labels.shape), samples=4)


def test_bounded_distance_matches_edt_within_its_reach():
    import edt

    from unified_framework.analysis._bounded_edt import bounded_distance_slabs

    rng = np.random.default_rng(0)
    cases = [
        (rng.random((20, 17, 23)) > 0.97, (2.0, 1.0, 1.5), 1e9, 7),
        (rng.random((20, 17, 23)) > 0.97, (2.0, 1.0, 1.5), 3.0, 4),
    ]
    thin = np.zeros((3, 40, 40), bool)
    thin[:, 18:22, 18:22] = True
    cases.append((thin, (2.0, 1.0, 1.0), 15.0, 2))  # reach beyond the slices' extent
    for mask, spacing, reach, slab in cases:
        parts = bounded_distance_slabs(
            mask.shape[0], mask.__getitem__, mask.shape[1:], spacing, reach, slab
        )
        ours = np.concatenate([d for _, d in parts])
        ref = edt.edt(~mask, anisotropy=spacing, black_border=False)
        near = ref <= reach
        assert np.allclose(ours[near], ref[near], rtol=1e-6)
        assert (ours[~near] > reach).all() and np.isfinite(ours).all()


def test_local_thickness_in_chunks_equals_the_whole_volume():
    _, labels = make_implant_phantom((64, 48, 48), seed=1, spacing=(5.0, 5.0, 5.0))
    layer = labels == 3
    for spacing in ((5.0, 5.0, 5.0), (10.0, 5.0, 5.0)):
        whole = local_thickness(layer, spacing, chunk=10**6)
        assert np.array_equal(local_thickness(layer, spacing, chunk=8), whole)
