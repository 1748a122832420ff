"""Registration: field convention (checked against SimpleITK), quality figures, methods recovering a known deformation.

Phantom pairs are 40³ with a known smooth deformation of up to 6 voxels
(``make_registration_pair``); convexAdam (40 Adam iterations instead of 80) takes a few
seconds per pair on 2 idle cores.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from unified_framework.data import make_registration_pair
from unified_framework.errors import InputError
from unified_framework.registration import (
    compose,
    invert,
    jacobian_determinant,
    load_field,
    register_volumes,
    save_field,
    warp,
)
from unified_framework.registration.affine import register_affine
from unified_framework.registration.convexadam import ConvexAdamParams
from unified_framework.registration.fields import (
    affine_field,
    resample_field,
    to_fixed_grid,
    warp_lazy,
)
from unified_framework.registration.quality import (
    folding_fraction,
    mutual_information,
    read_landmarks,
    target_registration_error,
    write_landmarks,
)
from unified_framework.registration.run import bin_volume
from unified_framework.registration.voxelmorph import (
    VoxelMorphConfig,
    load_voxelmorph,
    register_voxelmorph,
    train_voxelmorph,
)

torch.set_num_threads(2)
SPACING = (4.0, 5.0, 6.0)  # anisotropic on purpose: catches swapped axes


def smooth_field(shape, amplitude_um, seed=0, sigma=4.0):
    rng = np.random.default_rng(seed)
    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)]
    ).astype(np.float32)
    return field * np.float32(amplitude_um / np.abs(field).max())


def smooth_image(shape, seed=1):
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    return make_registration_pair((40, 40, 40), seed=2, displacement=6)


@pytest.fixture(scope="module")
def multimodal_pair():
    return make_registration_pair((40, 40, 40), seed=3, displacement=6, multimodal=True)


# --- field convention -------------------------------------------------------------------


def test_saved_field_is_a_simpleitk_displacement_transform_that_warps_like_ours(tmp_path):
    shape = (14, 18, 22)
    field = smooth_field(shape, 8.0)
    moving = smooth_image(shape)
    save_field(tmp_path / "field.mha", field, SPACING)

    image = sitk.ReadImage(str(tmp_path / "field.mha"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    moving_image = sitk.GetImageFromArray(moving)
    moving_image.SetSpacing(SPACING[::-1])
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(moving_image, moving_image, transform, sitk.sitkLinear, np.nan)
    )
    ours = warp(moving, field, SPACING)
    inside = np.isfinite(
        theirs
    )  # ITK leaves samples outside the moving volume at the default value
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-4)

    # And one physical point: ITK's transform moves it by our field at that voxel.
    index = (5, 7, 9)
    point = tuple(float(i * s) for i, s in zip(index[::-1], SPACING[::-1]))
    moved = np.asarray(transform.TransformPoint(point))[::-1]
    np.testing.assert_allclose(
        moved - np.asarray(index) * SPACING, field[(slice(None), *index)], atol=1e-4
    )

    loaded, spacing = load_field(tmp_path / "field.mha")
    assert spacing == SPACING
    np.testing.assert_allclose(loaded, field, atol=1e-6)


def test_field_files_of_the_wrong_kind_or_grid_are_refused(tmp_path):
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(tmp_path / "scalar.mha")
    )
    with pytest.raises(InputError, match="expected a 3D displacement field with 3 components"):
        load_field(tmp_path / "scalar.mha")
    save_field(tmp_path / "f.mha", np.zeros((3, 4, 5, 6)), (1, 1, 1))
    with pytest.raises(
        InputError, match=r"grid \(4, 5, 6\) does not match the volume's shape \(4, 5, 7\)"
    ):
        load_field(tmp_path / "f.mha", shape=(4, 5, 7))
    with pytest.raises(InputError, match="expected a displacement field"):
        warp(np.zeros((4, 5, 6)), np.zeros((2, 4, 5, 6)), (1, 1, 1))
    with pytest.raises(InputError, match="choose one of these suffixes"):
        save_field(tmp_path / "f.tif", np.zeros((3, 4, 4, 4)), (1, 1, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "f.mha",
        "scalar.mha",
    ]  # no temporaries left


def test_compose_equals_warping_twice_and_affine_field_moves_by_the_matrix():
    shape = (20, 22, 24)
    moving = smooth_image(shape)
    matrix = np.eye(4)
    matrix[:3, :3] = [[1.0, 0.02, 0], [-0.02, 1.0, 0.01], [0, 0, 0.98]]
    matrix[:3, 3] = (3.0, -4.0, 5.0)
    first = affine_field(matrix, shape, SPACING)
    point = np.array([7, 8, 9])
    np.testing.assert_allclose(
        first[(slice(None), *point)],
        matrix[:3, :3] @ (point * SPACING) + matrix[:3, 3] - point * SPACING,
        atol=1e-4,
    )
    second = smooth_field(shape, 6.0, seed=4)
    once = warp(moving, compose(first, second, SPACING), SPACING)
    twice = warp(warp(moving, first, SPACING), second, SPACING)
    interior = (slice(4, -4),) * 3
    assert np.abs(once[interior] - twice[interior]).max() < 0.02 * np.ptp(moving)


def test_inverse_undoes_the_field():
    field = smooth_field((24, 24, 24), 10.0, sigma=5)
    inverse = invert(field, SPACING)
    residual = compose(field, inverse, SPACING)
    assert np.abs(residual).max() < 0.05 * np.abs(field).max()


def test_labels_are_warped_nearest_and_keep_their_values():
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 3
    labels[6:10, 6:10, 6:10] = 7
    warped = warp(labels, smooth_field(labels.shape, 7.0), SPACING, interpolation="nearest")
    assert warped.dtype == np.uint8 and set(np.unique(warped)) == {0, 3, 7}


def test_lazy_warp_equals_in_memory_warp_also_from_a_binned_field():
    import dask.array as da

    shape = (24, 20, 28)
    moving = smooth_image(shape)
    coarse = smooth_field((12, 10, 14), 9.0, sigma=2)
    coarse_spacing = tuple(2 * s for s in SPACING)
    full = resample_field(coarse, shape, SPACING, coarse_spacing)
    lazy = warp_lazy(da.from_array(moving, chunks=7), coarse, SPACING, coarse_spacing, chunks=9)
    np.testing.assert_allclose(lazy.compute(), warp(moving, full, SPACING), atol=1e-5)
    with pytest.raises(InputError, match="does not cover the volume"):
        warp_lazy(da.from_array(moving), np.zeros((3, 5, 5, 5)), SPACING, coarse_spacing)


def test_bin_volume_keeps_the_origin_so_a_binned_field_maps_back():
    shape = (32, 32, 32)
    image = smooth_image(shape)
    small = bin_volume(image, 2)
    assert small.shape == (16, 16, 16)
    # voxel i of the binned copy is voxel 2 i of the original (after low-pass)
    np.testing.assert_allclose(
        small, ndimage.gaussian_filter(image, 1.0, mode="nearest")[::2, ::2, ::2], atol=1e-6
    )


# --- quality ----------------------------------------------------------------------------


def test_jacobian_of_a_scaling_is_its_volume_change_and_folding_is_counted():
    matrix = np.diag([1.1, 0.9, 1.2, 1.0])
    det = jacobian_determinant(affine_field(matrix, (10, 10, 10), SPACING), SPACING)
    np.testing.assert_allclose(det, 1.1 * 0.9 * 1.2, rtol=1e-4)
    folded = np.zeros((3, 10, 10, 10), np.float32)
    folded[2, :, :, 5:] = -3 * SPACING[2] * np.arange(5)  # x runs backwards in half the volume
    assert 0.3 < folding_fraction(jacobian_determinant(folded, SPACING)) < 0.6


def test_landmarks_roundtrip_and_tre(tmp_path):
    fixed = np.array([[10.0, 20.0, 30.0], [8.0, 10.0, 12.0]])
    moving = fixed + [4.0, 0.0, 0.0]
    write_landmarks(tmp_path / "l.csv", fixed, moving)
    f, m = read_landmarks(tmp_path / "l.csv")
    np.testing.assert_allclose(f, fixed)
    field = np.zeros((3, 10, 10, 10), np.float32)
    assert target_registration_error(field, SPACING, f, m).tolist() == [4.0, 4.0]
    field[0] = 4.0
    assert target_registration_error(field, SPACING, f, m).max() < 1e-9
    (tmp_path / "bad.csv").write_text("fixed_z,fixed_y\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        read_landmarks(tmp_path / "bad.csv")


def test_mutual_information_sees_a_non_monotonic_relation_that_correlation_misses():
    x = np.random.default_rng(0).random(20000)
    y = (x - 0.5) ** 2
    assert mutual_information(x, y) > 1.0
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.1


# --- methods ----------------------------------------------------------------------------


def test_convexadam_parameters_are_the_package_defaults():
    from convexAdam.convex_adam_MIND import convex_adam_pt

    from unified_framework.registration.convexadam import FRAMEWORK_PARAMS

    package = {k: p.default for k, p in inspect.signature(convex_adam_pt).parameters.items()}
    ours = ConvexAdamParams()
    for name in ours.__dataclass_fields__:
        if name not in FRAMEWORK_PARAMS:
            assert getattr(ours, name) == package[name], name


def test_importing_convexadam_leaves_warning_filters_alone():
    import warnings

    from unified_framework.registration.convexadam import _convex_adam_pt

    before = list(warnings.filters)
    _convex_adam_pt()
    assert warnings.filters == before


@pytest.mark.parametrize("which", ["pair", "multimodal_pair"])
@pytest.mark.parametrize("preset_name", ["package", "fast"])
def test_convexadam_recovers_the_known_deformation(which, preset_name, request):
    """The package's own run (40 iterations) and the fast preset's composed coarse-to-fine run."""
    from unified_framework.registration.convexadam import preset

    pair = request.getfixturevalue(which)
    if preset_name == "fast":
        params = preset("fast")
        assert not params.package_only  # the composed path, not convex_adam_pt
    else:
        params = ConvexAdamParams(selected_niter=40)
    result = register_volumes(
        pair.fixed,
        pair.moving,
        pair.spacing,
        "convexadam",
        prealign="none",
        device="cpu",
        params=params,
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
        landmarks=(pair.fixed_points, pair.moving_points),
    )
    report = result.report
    dice = report["labels"]["mean_dice"]
    tre = report["landmarks"]["tre_median_voxels"]
    assert 1 - dice["after"] < 0.6 * (1 - dice["before"]), dice  # the deficit shrinks > 40 %
    assert tre["after"] < 0.5 * tre["before"], tre
    assert report["jacobian"]["folding_fraction"] < 0.005
    if preset_name == "fast":
        assert report["parameters"]["coarse_niter"] == 30
    # the field itself: closer to the truth than no registration, inside the sample
    inside = pair.fixed_labels > 0
    error = np.sqrt(((result.field - pair.field) ** 2).sum(0))[inside]
    truth = np.sqrt((pair.field**2).sum(0))[inside]
    # Across modalities at 40³ the fast preset's 38 iterations leave more of the field
    # (0.53 of it measured).
    loose = preset_name == "fast" and "multimodal" in which
    assert np.median(error) < (0.6 if loose else 0.5) * np.median(truth)


def test_composed_convexadam_with_the_package_parameters_is_the_package(pair):
    """The fast path's own Adam loop is the package's: same field for the package's parameters."""
    from dataclasses import asdict

    import torch.nn.functional as F

    from unified_framework.registration import convexadam as ca

    x = torch.randn(1, 3, 7, 8, 9)
    assert torch.allclose(ca._box3(x), F.avg_pool3d(x, 3, stride=1, padding=1), atol=1e-6)
    fixed = torch.from_numpy(ca.normalise(pair.fixed[:24, :24, :24]))
    moving = torch.from_numpy(ca.normalise(pair.moving[:24, :24, :24]))
    package = {
        k: v
        for k, v in asdict(ca.ConvexAdamParams(selected_niter=10)).items()
        if k not in ca.FRAMEWORK_PARAMS
    }
    cpu = torch.device("cpu")
    with torch.enable_grad():
        theirs = ca._convex_adam_pt()(
            img_fixed=fixed, img_moving=moving, **package, dtype=torch.float32, device=cpu
        )
        ours = ca._convex_adam_composed(fixed, moving, package, 0, 1.0, torch.float32, cpu)
    assert ours.shape == theirs.shape == (24, 24, 24, 3)
    assert np.abs(ours - theirs).max() < 1e-3
    with pytest.raises(InputError, match="preset 'quick'"):
        ca.preset("quick")
    with pytest.raises(InputError, match="lr=0"):
        ca.preset("fast", lr=0)


def test_affine_prealignment_recovers_a_rigid_shift(pair):
    matrix = np.eye(4)
    matrix[:3, 3] = (6.0, -8.0, 5.0)  # micrometres, about one voxel
    shifted = warp(pair.moving, affine_field(matrix, pair.moving.shape, pair.spacing), pair.spacing)
    # shifted(p) = moving(p + t): registering moving (as moving) to shifted (as fixed) finds p -> p + t
    found = register_affine(shifted, pair.moving, pair.spacing, kind="rigid")
    np.testing.assert_allclose(found.matrix[:3, 3], matrix[:3, 3], atol=1.5)
    np.testing.assert_allclose(found.matrix[:3, :3], np.eye(3), atol=0.02)


@pytest.mark.training
def test_voxelmorph_trains_resumes_and_applies_in_the_field_convention(tmp_path, pair):
    config = VoxelMorphConfig(
        features=[8, 8, 8],
        steps=4,
        patch_size=32,
        checkpoint_every=2,
        log_every=1,
        val_every=2,
        device="cpu",
    )
    pairs = [(pair.fixed, pair.moving)]
    first = train_voxelmorph(
        pairs, tmp_path / "vxm.pt", config, val_pairs=pairs, max_steps_this_run=2
    )
    assert first.steps == 2 and (tmp_path / "vxm.pt.checkpoint.pt").is_file()
    result = train_voxelmorph(pairs, tmp_path / "vxm.pt", config, val_pairs=pairs)
    assert result.steps == 4
    lines = [
        json.loads(line) for line in (tmp_path / "vxm.pt.metrics.jsonl").read_text().splitlines()
    ]
    assert [line["step"] for line in lines if line["phase"] == "train"] == [1, 2, 3, 4]
    assert [line["step"] for line in lines if line["phase"] == "val"] == [2, 4]
    with pytest.raises(InputError, match="different training configuration"):
        train_voxelmorph(
            pairs,
            tmp_path / "vxm.pt",
            VoxelMorphConfig(features=[8, 8, 8], steps=5, patch_size=32, device="cpu"),
        )

    model = load_voxelmorph(tmp_path / "vxm.pt")
    fixed, moving = (
        pair.fixed[:32, :40, :36],
        pair.moving[:32, :40, :36],
    )  # not multiples of 8: padded inside
    field = register_voxelmorph(fixed, moving, pair.spacing, model, device="cpu")
    assert field.shape == (3, 32, 40, 36)
    # the network's own warp of the moving patch equals ours with the returned field
    from unified_framework.registration.convexadam import normalise

    network = model.network("cpu")
    with torch.no_grad():
        disp, warped = network(
            torch.from_numpy(normalise(moving[:32, :40, :32]))[None, None],
            torch.from_numpy(normalise(fixed[:32, :40, :32]))[None, None],
            return_warped_source=True,
        )
    ours = warp(
        normalise(moving[:32, :40, :32]),
        disp[0].numpy() * np.asarray(pair.spacing, np.float32).reshape(3, 1, 1, 1),
        pair.spacing,
        fill="constant",
    )
    np.testing.assert_allclose(
        ours[2:-2, 2:-2, 2:-2], warped[0, 0].numpy()[2:-2, 2:-2, 2:-2], atol=1e-4
    )


def test_voxelmorph_model_file_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a VoxelMorph model"):
        load_voxelmorph(tmp_path / "junk.pt")


# --- bad input --------------------------------------------------------------------------


def test_bad_inputs_are_one_line_input_errors(pair):
    fixed, moving, spacing = pair.fixed, pair.moving, pair.spacing
    with pytest.raises(InputError, match="expected a 3D volume"):
        register_volumes(fixed[0], moving, spacing, "affine")
    nan = moving.copy()
    nan[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register_volumes(fixed, nan, spacing, "affine")
    with pytest.raises(InputError, match="holds no label"):
        register_volumes(
            fixed,
            moving,
            spacing,
            "affine",
            fixed_labels=pair.fixed_labels,
            moving_labels=np.zeros_like(pair.moving_labels),
        )
    with pytest.raises(InputError, match="differs from the fixed volume's"):
        to_fixed_grid(moving[::5, ::5, ::5], tuple(5 * s for s in spacing), fixed.shape, spacing)
    with pytest.raises(
        InputError,
        match=r"moving labels: shape \(20, 40, 40\); expected \(40, 40, 40\) like its image",
    ):
        register_volumes(
            fixed,
            moving,
            spacing,
            "affine",
            fixed_labels=pair.fixed_labels,
            moving_labels=pair.moving_labels[:20],
        )
    with pytest.raises(InputError, match="needs a trained model"):
        register_volumes(fixed, moving, spacing, "voxelmorph")


def test_moving_on_another_grid_is_resampled_with_a_notice(pair, caplog):
    coarse = pair.moving[::2, ::2, ::2]
    with caplog.at_level("WARNING"):
        result = register_volumes(
            pair.fixed,
            coarse,
            pair.spacing,
            "affine",
            prealign="rigid",
            moving_spacing=tuple(2 * s for s in pair.spacing),
        )
    assert "resampling" in caplog.text
    assert result.warped.shape == pair.fixed.shape


# --- world geometry -----------------------------------------------------------------------


def _rotation_x(degrees):
    """Rotation about the world x axis, in our (z, y, x) order."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def world_pair(pair):
    """The phantom pair placed in the world: fixed rotated 30° and shifted; moving on a
    grid of its own (another origin, a further 90° rotation, 1.25x coarser voxels)."""
    from unified_framework.io import Volume, resample_to

    spacing = np.asarray(pair.spacing)
    n = np.asarray(pair.fixed.shape)
    origin_f, direction_f = np.array([100.0, -50.0, 20.0]), _rotation_x(30)
    fixed = Volume(pair.fixed, tuple(spacing), {}, None, tuple(origin_f), direction_f)
    # In the fixed grid frame: moving index axes z, y, x point along +z, +x, -y.
    q = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    spacing_m = 1.25 * spacing[[0, 2, 1]]
    extent = (n - 1) * spacing
    shape_m = tuple(int(np.ceil(e / s)) + 1 for e, s in zip(extent[[0, 2, 1]], spacing_m))
    corner = np.array([0.0, extent[1], 0.0])
    origin_m, direction_m = origin_f + direction_f @ corner, direction_f @ q

    def place(data, order):
        source = Volume(data, tuple(spacing), {}, None, tuple(origin_f), direction_f)
        grid = Volume(
            np.zeros(shape_m, data.dtype), tuple(spacing_m), {}, None, tuple(origin_m), direction_m
        )
        return resample_to(source, grid, order=order)

    def world(points):
        return points @ direction_f.T + origin_f

    return (
        fixed,
        place(pair.moving, 1),
        place(pair.moving_labels, 0),
        (world(pair.fixed_points), world(pair.moving_points)),
    )


def test_moving_with_another_origin_rotation_and_spacing_is_registered_in_world_coordinates(
    tmp_path, pair, world_pair
):
    from unified_framework.cli.main import main
    from unified_framework.io import read_volume, write_volume
    from unified_framework.registration.fields import moving_index_map
    from unified_framework.registration.run import write_outputs

    fixed, moving, moving_labels, landmarks = world_pair
    assert moving.shape != fixed.shape and not np.allclose(moving.direction, fixed.direction)
    result = register_volumes(
        fixed.data,
        moving.data,
        fixed.spacing,
        "convexadam",
        moving_spacing=moving.spacing,
        origin=fixed.origin,
        direction=fixed.direction,
        moving_origin=moving.origin,
        moving_direction=moving.direction,
        prealign="none",
        device="cpu",
        params=ConvexAdamParams(selected_niter=40),
        fixed_labels=pair.fixed_labels,
        moving_labels=moving_labels.data,
        landmarks=landmarks,
    )
    report = result.report
    dice, tre = report["labels"]["mean_dice"], report["landmarks"]["tre_median_voxels"]
    assert 1 - dice["after"] < 0.6 * (1 - dice["before"]), dice
    assert tre["after"] < 0.5 * tre["before"] and tre["after"] < 1.0, tre
    assert report["jacobian"]["folding_fraction"] < 0.005
    # The known deformation (grid frame of the fixed volume) is recovered.
    inside = pair.fixed_labels > 0
    error = np.sqrt(((result.field - pair.field) ** 2).sum(0))[inside]
    truth = np.sqrt((pair.field**2).sum(0))[inside]
    assert np.median(error) < 0.5 * np.median(truth)

    # The saved field carries the fixed geometry and world vectors ...
    write_outputs(tmp_path / "out", result)
    field, spacing, origin, direction = load_field(tmp_path / "out" / "field.mha", geometry=True)
    np.testing.assert_allclose(origin, fixed.origin, atol=1e-4)
    np.testing.assert_allclose(direction, fixed.direction, atol=1e-6)
    np.testing.assert_allclose(field, result.field, atol=1e-4)
    # ... so SimpleITK warps the moving volume (with its own geometry) like we do.
    from unified_framework.registration.fields import grid_image

    image = sitk.ReadImage(str(tmp_path / "out" / "field.mha"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    moving_image = grid_image(
        moving.data.astype(np.float32),
        moving.spacing,
        origin=moving.origin,
        direction=moving.direction,
    )
    reference = grid_image(
        np.zeros(fixed.shape, np.float32),
        fixed.spacing,
        origin=fixed.origin,
        direction=fixed.direction,
    )
    theirs = sitk.GetArrayFromImage(
        sitk.Resample(moving_image, reference, transform, sitk.sitkLinear, np.nan)
    )
    to_moving = moving_index_map(moving.affine, fixed.origin, fixed.direction)
    ours = warp(moving.data, result.field, fixed.spacing, to_moving=to_moving)
    inside = np.isfinite(theirs)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-3)
    # result.warped interpolates twice (resampled into the fixed grid, then warped).
    assert np.abs(ours - result.warped).mean() < 0.01 * np.ptp(ours)

    # 'mdlma register apply' maps the moving labels (a NIfTI file with their own
    # geometry) through world coordinates onto the fixed grid.
    write_volume(tmp_path / "moving_labels.nii.gz", moving_labels)
    assert (
        main(
            [
                "register",
                "apply",
                str(tmp_path / "out" / "field.mha"),
                str(tmp_path / "moving_labels.nii.gz"),
                "--out",
                str(tmp_path / "warped_labels.nii.gz"),
                "--interpolation",
                "nearest",
            ]
        )
        == 0
    )
    applied = read_volume(tmp_path / "warped_labels.nii.gz")
    assert applied.shape == fixed.shape
    np.testing.assert_allclose(applied.origin, fixed.origin, atol=1e-2)
    direct = warp(moving_labels.data, result.field, fixed.spacing, "nearest", to_moving=to_moving)
    assert (applied.data == direct).mean() > 0.999
    # One nearest-neighbour step instead of two: at least as close to the fixed labels.
    agree = (applied.data == pair.fixed_labels).mean()
    assert agree >= (result.warped_labels == pair.fixed_labels).mean() - 0.01


def test_volumes_that_do_not_overlap_in_the_world_are_refused(pair):
    with pytest.raises(InputError, match=r"covers 0% of the fixed volume in world coordinates"):
        register_volumes(
            pair.fixed,
            pair.moving,
            pair.spacing,
            "affine",
            moving_origin=(1e5, 0.0, 0.0),
        )


def test_convexadam_at_half_resolution_still_recovers_the_deformation(pair):
    from unified_framework.registration.convexadam import resolved_downsample

    assert resolved_downsample(ConvexAdamParams(), (128, 128, 128)) == 2
    assert resolved_downsample(ConvexAdamParams(), pair.fixed.shape) == 1
    result = register_volumes(
        pair.fixed,
        pair.moving,
        pair.spacing,
        "convexadam",
        prealign="none",
        device="cpu",
        params=ConvexAdamParams(selected_niter=40, downsample=2),
        fixed_labels=pair.fixed_labels,
        moving_labels=pair.moving_labels,
    )
    assert result.field.shape == (3, *pair.fixed.shape)
    assert result.report["parameters"]["downsample"] == 2
    dice = result.report["labels"]["mean_dice"]
    assert 1 - dice["after"] < 0.7 * (1 - dice["before"]), dice
    with pytest.raises(InputError, match="downsample=0"):
        ConvexAdamParams(downsample=0)
    with pytest.raises(InputError, match="too small for grid_sp=6 at downsample 4"):
        register_volumes(
            pair.fixed,
            pair.moving,
            pair.spacing,
            "convexadam",
            prealign="none",
            params=ConvexAdamParams(downsample=4),
        )


def test_voxelmorph_at_half_resolution_returns_a_full_resolution_field(tmp_path, pair):
    config = VoxelMorphConfig(
        features=[8, 8], steps=2, patch_size=16, downsample=2, device="cpu", val_every=10
    )
    result = train_voxelmorph([(pair.fixed, pair.moving)], tmp_path / "vxm.pt", config)
    model = load_voxelmorph(result.model_path)
    assert model.config.downsample == 2
    field = register_voxelmorph(pair.fixed, pair.moving, pair.spacing, model, device="cpu")
    assert field.shape == (3, *pair.fixed.shape) and np.isfinite(field).all()
