"""SUN geometry, accumulator, network and model package (no training needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unified_framework.errors import InputError
from unified_framework.sun.axes import (
    AXES,
    AXIS_NAMES,
    ProbabilitySlab,
    axis_grid,
    parse_axes,
    sample_slices,
    slice_footprint,
)
from unified_framework.sun.inference.accumulator import (
    MemoryAccumulator,
    ZarrAccumulator,
    chunk_regions,
    fuse,
)
from unified_framework.sun.model_package import Normalization, SunModel, load_model, save_model
from unified_framework.sun.networks import UNet2D, UNetConfig, fold_batch_norm
from unified_framework.sun.votes import PROBABILITY_SCALE, accumulator_channels, pack_votes

torch.set_num_threads(2)
SHAPE = (7, 10, 6)  # odd, anisotropic, small: every corner case of the rotated grids


def _reader(volume):
    return lambda region: volume[(slice(None), *region)]


def _on_voxels(slices, grid, u0, u1, region):
    return ProbabilitySlab(slices, grid, u0, u1).on_voxels(region)


def _votes_per_voxel(name, shape, n_slabs):
    """How many votes each voxel gets from one axis split into ``n_slabs`` unit ranges."""
    grid = axis_grid(name, shape)
    ones = np.ones((1, *shape), np.float32)
    counts = np.zeros(shape, int)
    bounds = np.linspace(0, grid.n_units, n_slabs + 1).round().astype(int)
    for u0, u1 in zip(bounds[:-1], bounds[1:]):
        s0, s1 = grid.slices_for_units(u0, u1)
        slices = sample_slices(_reader(ones), grid, s0, s1, 1)
        for tile in chunk_regions(shape, (3, 4, 5)):
            lo, hi = grid.unit_range(tile)
            if not grid.axis.diagonal:
                tile = tuple(
                    slice(max(t.start, u0), min(t.stop, u1)) if i == grid.axis.principal else t
                    for i, t in enumerate(tile)
                )
                if tile[grid.axis.principal].start >= tile[grid.axis.principal].stop:
                    continue
            elif hi <= u0 or lo >= u1:
                continue
            values, owned = _on_voxels(slices, grid, u0, u1, tile)
            counts[tile] += 1 if owned is None else owned
            np.testing.assert_allclose(
                values[0] if owned is None else values[0][owned], 1.0, rtol=1e-6
            )
    return counts


@pytest.mark.parametrize("name", AXIS_NAMES)
def test_every_voxel_gets_exactly_one_vote_per_axis(name):
    for slabs in (1, 3):
        assert (_votes_per_voxel(name, SHAPE, slabs) == 1).all()


def test_orthogonal_axes_are_exact_copies():
    volume = np.random.default_rng(0).random((2, *SHAPE), dtype=np.float32)
    for name in ("z", "y", "x"):
        grid = axis_grid(name, SHAPE)
        slices = sample_slices(_reader(volume), grid, 0, grid.n_slices, 2)
        assert slices.shape == (grid.n_slices, 2, *grid.slice_shape)
        values, owned = _on_voxels(slices, grid, 0, grid.n_units, tuple(slice(0, n) for n in SHAPE))
        assert owned is None
        np.testing.assert_array_equal(values, volume)
    z_slices = sample_slices(_reader(volume), axis_grid("z", SHAPE), 2, 4, 2)
    np.testing.assert_array_equal(z_slices[0], volume[:, 2])


@pytest.mark.parametrize("name", AXIS_NAMES[3:])
def test_diagonal_geometry_is_a_45_degree_rotation(name):
    shape = (12, 14, 13)
    axis = AXES[name]
    coords = np.indices(shape).astype(np.float32)
    grid = axis_grid(name, shape)
    slices = sample_slices(_reader(coords), grid, 0, grid.n_slices, 3)
    footprint = slice_footprint(grid, 0, grid.n_slices)
    i = grid.n_slices // 2
    inside = np.flatnonzero(footprint[i])[2:-2]
    a, b = axis.plane
    # Along a slice row, positions move by 1 voxel pitch in the direction (e_a - s e_b)/sqrt(2).
    step_a = np.diff(slices[i, a, 3, inside])
    step_b = np.diff(slices[i, b, 3, inside])
    np.testing.assert_allclose(step_a, np.sqrt(0.5), atol=1e-4)
    np.testing.assert_allclose(step_b, -axis.sign * np.sqrt(0.5), atol=1e-4)
    # Rows run along the principal axis and hit voxel centres (no interpolation along it).
    np.testing.assert_allclose(
        slices[i, axis.principal, :, inside[0]], np.arange(shape[axis.principal]), atol=1e-5
    )
    # Consecutive slices are one voxel pitch apart along the normal (e_a + s e_b)/sqrt(2).
    normal = (
        slices[i + 1, a, 3, inside[2]] - slices[i, a, 3, inside[2]],
        slices[i + 1, b, 3, inside[2]] - slices[i, b, 3, inside[2]],
    )
    np.testing.assert_allclose(normal, (np.sqrt(0.5), axis.sign * np.sqrt(0.5)), atol=1e-4)
    # Linear functions survive the round trip exactly away from the border (bilinear both ways).
    values, owned = _on_voxels(slices, grid, 0, grid.n_units, tuple(slice(0, n) for n in shape))
    assert owned.all()
    np.testing.assert_allclose(values[:, 2:-2, 2:-2, 2:-2], coords[:, 2:-2, 2:-2, 2:-2], atol=1e-4)


def test_diagonal_reads_stay_in_boxes_of_the_requested_size():
    volume = np.random.default_rng(1).random((1, 40, 40, 40), dtype=np.float32)
    boxes = []

    def read(region):
        boxes.append(tuple(r.stop - r.start for r in region))
        return volume[(slice(None), *region)]

    grid = axis_grid("y+x", volume.shape[1:])
    small = sample_slices(read, grid, 20, 24, 1, block_bytes=40 * 12 * 12 * 4)
    whole = sample_slices(_reader(volume), grid, 20, 24, 1)
    np.testing.assert_allclose(small, whole, atol=1e-5)  # float32 grid coordinates differ per box
    assert len(boxes) > 2 and max(np.prod(b) for b in boxes) < 0.5 * 40**3


def test_parse_axes():
    assert parse_axes("3") == ("z", "y", "x")
    assert parse_axes(9) == AXIS_NAMES and len(AXIS_NAMES) == 9
    assert parse_axes("y+x, z") == ("z", "y+x")  # canonical order
    for bad in ("4", "z,q", "", []):
        with pytest.raises(InputError, match="axes"):
            parse_axes(bad)


def test_pack_and_fuse():
    probabilities = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]], np.float32).reshape(3, 2, 1, 1)
    other = np.array([[0.1, 0.1], [0.8, 0.1], [0.1, 0.8]], np.float32).reshape(3, 2, 1, 1)
    p, o = probabilities, other
    accumulated = pack_votes(p) + pack_votes(o) + pack_votes(p)
    fused = fuse(accumulated, 3, 3)
    expected = (2 * probabilities + other) / 3
    assert fused["probabilities"].dtype == np.float16
    np.testing.assert_allclose(
        fused["probabilities"], expected, atol=1 / PROBABILITY_SCALE + 2**-12
    )  # + float16 rounding
    np.testing.assert_array_equal(fused["labels"].ravel(), [0, 2])
    # Voxel 0: fused class 0, one of three axes voted class 1. Voxel 1: fused class 2
    # (sums 0.5, 1.1, 1.4) although two of the three axes voted class 1.
    np.testing.assert_allclose(fused["disagreement"].ravel(), [1 / 3, 2 / 3], atol=2**-12)
    entropy = -(expected * np.log(expected)).sum(0) / np.log(3)
    np.testing.assert_allclose(
        fused["entropy"], entropy, atol=1e-3
    )  # probabilities carry 1/PROBABILITY_SCALE steps
    owned = np.array([True, False]).reshape(2, 1, 1)
    assert (pack_votes(p, owned)[:, 1] == 0).all()


def test_integer_accumulation_is_order_independent():
    rng = np.random.default_rng(2)
    parts = []
    for _ in range(9):
        p = rng.random((4, 5, 6, 7), dtype=np.float32)
        parts.append(pack_votes(p / p.sum(0)))
    forward, backward = MemoryAccumulator((5, 6, 7), 4), MemoryAccumulator((5, 6, 7), 4)
    assert forward.array.dtype == np.uint16 and forward.array.shape[0] == 4
    region = (slice(0, 5), slice(0, 6), slice(0, 7))
    for number, part in enumerate(parts):
        forward.add(number, region, part)
    for number, part in reversed(list(enumerate(parts))):
        backward.add(number, region, part)
    np.testing.assert_array_equal(forward.array, backward.array)


def test_zarr_accumulator_adds_each_unit_once(tmp_path):
    accumulator = ZarrAccumulator(
        tmp_path / "acc.zarr", (6, 6, 6), 2, chunks=(3, 3, 3)
    )  # no cache: written at once
    block = np.full((2, 3, 3, 3), 5, np.uint16)
    region = (slice(0, 3), slice(0, 3), slice(3, 6))
    accumulator.add(0, region, block)
    accumulator.add(0, region, block)  # a re-run of unit 0 after a kill: skipped
    accumulator.add(1, region, block)
    reopened = ZarrAccumulator(tmp_path / "acc.zarr", (6, 6, 6), 2, chunks=(3, 3, 3))
    assert (reopened.read(region) == 10).all()
    assert (reopened.read((slice(3, 6), slice(0, 6), slice(0, 6))) == 0).all()
    assert list(reopened.stored_regions()) == [region]


def test_zarr_accumulator_cache_loses_nothing_when_killed(tmp_path):
    """Chunks written on eviction hold their units; units after the checkpoint are re-run."""
    chunk_bytes = 3 * 3 * 3 * 3 * 2  # (2 channels + counter) x 3^3 uint16
    accumulator = ZarrAccumulator(
        tmp_path / "acc.zarr", (6, 6, 6), 2, chunks=(3, 3, 3), cache_bytes=2 * chunk_bytes
    )
    ones = np.ones((2, 3, 3, 3), np.uint16)
    regions = list(chunk_regions((6, 6, 6), (3, 3, 3)))
    for unit in range(2):
        for region in regions:
            accumulator.add(unit, region, ones)
    accumulator.flush()  # checkpoint: units 0 and 1 are safe
    for unit in range(2, 4):
        for region in regions:
            accumulator.add(unit, region, ones)
    assert (accumulator.read(regions[-1]) == 4).all()  # seen through the cache
    # Killed here: the two cached chunks are lost, the evicted ones are on disk. Resume from the checkpoint.
    resumed = ZarrAccumulator(tmp_path / "acc.zarr", (6, 6, 6), 2, chunks=(3, 3, 3))
    assert sorted((resumed.read(r) == 4).all() for r in regions) == [False] * 2 + [True] * 6
    for unit in range(2, 4):
        for region in regions:
            resumed.add(unit, region, ones)
    for region in regions:
        assert (resumed.read(region) == 4).all()


def test_file_runs_cache_chunks_only_when_a_layer_fits():
    from unified_framework.sun.inference.budget import MemoryBudget

    def split(shape, chunks, classes, total):
        budget = MemoryBudget.for_file_run(total, shape, chunks, classes)
        assert budget.activations + budget.groups + budget.reading == budget.working
        return budget.working, budget.chunk_cache

    # 256^3, 64^3 chunks, 4 classes: a layer of chunks is 256 x 256 x 64 x 10 bytes = 40 MiB.
    assert split((256,) * 3, (64,) * 3, 4, 256 * 2**20) == (128 * 2**20, 128 * 2**20)
    assert split((256,) * 3, (64,) * 3, 4, 64 * 2**20) == (64 * 2**20, 0)
    # Along x the layer is the whole 256 x 256 x 64 volume (40 MiB), with 16-voxel chunks a quarter.
    assert split((256, 256, 64), (64,) * 3, 4, 64 * 2**20)[1] == 0
    assert split((256, 256, 64), (64, 64, 16), 4, 64 * 2**20)[1] == 32 * 2**20


def test_a_jobs_memory_gives_half_of_what_the_runtime_leaves():
    from unified_framework.sun.inference.budget import MemoryBudget

    # The sun-predict template passes SLURM_MEM_PER_NODE (default 2048) as --job-memory.
    assert MemoryBudget.job_budget_mb(2048) == 512 and MemoryBudget.job_budget_mb(900) == 64


def test_thin_groups_across_rows_are_warned_about(caplog):
    from unified_framework.sun.inference.budget import MemoryBudget
    from unified_framework.sun.inference.predictor import THIN_GROUP_UNITS, group_units_by_axis

    shape = (64, 512, 512)  # 4 classes + 1 channel: 20 bytes per slice pixel
    with caplog.at_level("WARNING", logger="unified_framework.sun.inference.predictor"):
        limits = group_units_by_axis(shape, AXIS_NAMES, 4, 1, MemoryBudget.in_memory(16 * 2**20))
    # 6 MiB for groups: 1 slice of 512 x 512 (z), 9 of 64 x 512 (y and x)
    assert limits["z"] == 1 and limits["y"] == limits["x"] == 9
    assert all(limits[name] < THIN_GROUP_UNITS for name in ("y+x", "y-x", "z+y", "z-y"))
    warnings = [r.getMessage() for r in caplog.records]
    # Only axes whose groups cut across the x rows are slowed down by thin groups: not z (rows
    # contiguous), not x here (9 slices), not z+y / z-y (their slices run along x).
    assert len(warnings) == 1 and "along y+x, y-x, z+x, z-x;" in warnings[0], warnings
    caplog.clear()
    with caplog.at_level("WARNING", logger="unified_framework.sun.inference.predictor"):
        group_units_by_axis(shape, AXIS_NAMES, 4, 1, MemoryBudget.in_memory(2048 * 2**20))
    assert not caplog.records


@pytest.mark.parametrize(
    "config",
    [
        dict(depth=1, base_width=4),
        dict(depth=3, base_width=8, norm="instance", dropout=0.2),
        dict(depth=4, base_width=6, norm="group", in_channels=3, num_classes=2, input_size=64),
        dict(norm="none", depth=2),
    ],
)
def test_unet_shapes(config):
    net = UNet2D(UNetConfig(**config)).eval()
    cfg = net.config
    x = torch.randn(2, cfg.in_channels, 3 * cfg.divisor, 5 * cfg.divisor)
    assert net(x).shape == (2, cfg.num_classes, *x.shape[2:])


def test_unet_config_is_validated():
    for bad in (
        dict(depth=0),
        dict(norm="layer"),
        dict(num_classes=1),
        dict(depth=4, input_size=12),
        dict(dropout=1.0),
    ):
        with pytest.raises(InputError, match="U-Net"):
            UNetConfig(**bad)


def _tiny_model(**kwargs) -> SunModel:
    config = UNetConfig(depth=2, base_width=4, input_size=16, **kwargs)
    torch.manual_seed(0)
    channels = config.in_channels
    return SunModel(
        config,
        UNet2D(config).state_dict(),
        Normalization((0.0,) * channels, (1.0,) * channels, (0.5,) * channels, (0.25,) * channels),
        [f"c{i}" for i in range(config.num_classes)],
        (5.0, 5.0, 5.0),
        ("z", "y", "x"),
        "float32",
        {"note": "test"},
    )


def test_model_package_round_trip(tmp_path):
    model = _tiny_model()
    path = save_model(tmp_path / "m.pt", model)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.class_names == model.class_names
    assert loaded.axes == ("z", "y", "x") and loaded.voxel_size == (5.0, 5.0, 5.0)
    assert loaded.normalization == model.normalization and loaded.provenance == {"note": "test"}
    for key, value in model.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)


def test_model_package_refuses_damaged_or_foreign_files(tmp_path):
    path = save_model(tmp_path / "m.pt", _tiny_model())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for bad, message in (
        (truncated, "not a readable"),
        (foreign, "not a SUN model"),
        (tmp_path / "missing.pt", "no such"),
    ):
        with pytest.raises(InputError, match=message) as info:
            load_model(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    payload = torch.load(path, weights_only=True)
    payload["class_names"] = ["only one"]
    torch.save(payload, tmp_path / "names.pt")
    with pytest.raises(InputError, match="class names"):
        load_model(tmp_path / "names.pt")


def test_model_refuses_volumes_that_do_not_fit():
    model = _tiny_model(in_channels=2)
    model.check_volume((2, 8, 8, 8), np.float64, "v")  # floats may replace each other
    with pytest.raises(InputError, match="1 channel.*expects 2"):
        model.check_volume((8, 8, 8), np.float32, "v")
    with pytest.raises(InputError, match="uint16.*float32"):
        model.check_volume((2, 8, 8, 8), np.uint16, "v")
    with pytest.raises(InputError, match="complex"):
        model.check_volume((2, 8, 8, 8), np.complex64, "v")


def test_folding_batch_norm_keeps_the_output():
    torch.manual_seed(0)
    net = UNet2D(UNetConfig(depth=3, base_width=8))
    net.train()
    for _ in range(3):  # give the running statistics non-trivial values
        net(torch.randn(4, 1, 32, 32) * 3 + 1)
    net.eval()
    folded = fold_batch_norm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


def test_volume_source_reads_chunked_arrays_box_by_box(tmp_path):
    import zarr

    from unified_framework.sun.inference import VolumeSource

    volume = np.random.default_rng(4).random((30, 20, 10)).astype(np.float32)
    stored = zarr.open_array(
        str(tmp_path / "v.zarr"), mode="w", shape=volume.shape, chunks=(7, 8, 9), dtype=np.float32
    )
    stored[...] = volume
    chunked, in_memory = VolumeSource([stored]), VolumeSource([volume])
    for region in [
        (slice(5, 29), slice(2, 19), slice(0, 10)),
        (slice(0, 30), slice(0, 20), slice(3, 4)),
        (slice(13, 14), slice(0, 20), slice(1, 9)),
    ]:
        np.testing.assert_array_equal(chunked.read(region), in_memory.read(region))
        np.testing.assert_array_equal(chunked.read(region)[0], volume[region])


def _reference_votes(p: np.ndarray) -> np.ndarray:
    """The encoding of votes.py written out in numpy (4 classes: 3 sums and one word of counts)."""
    levels = np.rint(
        np.clip(np.cumsum(p.astype(np.float64), axis=0), 0, 1) * PROBABILITY_SCALE
    ).astype(np.int64)
    sums = np.diff(levels, axis=0, prepend=0)[:-1]
    best = p.argmax(0)
    counts = np.where(best < 3, np.left_shift(1, 4 * np.minimum(best, 2)), 0)
    return np.concatenate([sums, counts[None]]).astype(np.uint16)


def test_pack_votes_matches_a_plain_numpy_reference():
    rng = np.random.default_rng(3)
    p = rng.random((4, 6, 7, 8), dtype=np.float32)
    p /= p.sum(0)
    p[:, 0, 0, 0] = [0.25, 0.25, 0.25, 0.25]  # a tie: the lowest class gets the vote, as argmax
    p[:, 0, 0, 1] = [0.1, 0.2, 0.3, 0.4]  # the last class wins: no count stored, it is implicit
    owned = rng.random((6, 7, 8)) > 0.3
    expected = _reference_votes(p)
    assert accumulator_channels(4) == 4 and expected[3, 0, 0, 0] == 1 and expected[3, 0, 0, 1] == 0
    strided = np.moveaxis(
        np.ascontiguousarray(np.moveaxis(p, 1, 0)), 0, 1
    )  # same values, other strides
    np.testing.assert_array_equal(pack_votes(strided), expected)
    np.testing.assert_array_equal(pack_votes(p, owned), expected * owned)
    target = np.full((4, 10, 7, 8), 5, np.uint16)
    pack_votes(p, owned, out=target[:, 2:8], accumulate=True)
    np.testing.assert_array_equal(target[:, 2:8], expected * owned + 5)
    assert (target[:, :2] == 5).all() and (target[:, 8:] == 5).all()


def test_encoding_sums_each_axis_to_the_scale_and_counts_votes_of_many_classes():
    # 7 classes: 6 sums, and the counts of classes 0-5 in two words (4 + 2 nibbles).
    rng = np.random.default_rng(5)
    p = rng.random((7, 3, 4, 5), dtype=np.float32) ** 4
    p /= p.sum(0)
    assert accumulator_channels(7) == 8
    packed = pack_votes(p)
    assert (packed[:6].astype(int).sum(0) <= PROBABILITY_SCALE).all()
    accumulated = sum(pack_votes(p) for _ in range(15))  # MAX_AXES axes: no overflow
    fused = fuse(accumulated, 15, 7)
    np.testing.assert_allclose(fused["probabilities"], p, atol=1 / PROBABILITY_SCALE + 2**-12)
    np.testing.assert_array_equal(fused["labels"], p.argmax(0))
    assert (fused["disagreement"] == 0).all()


def test_diagonal_votes_match_resampled_probabilities():
    """The fused resample-and-pack kernel gives the votes of the resampled probabilities."""
    shape = (9, 11, 10)
    rng = np.random.default_rng(6)
    for name in AXIS_NAMES[3:]:
        grid = axis_grid(name, shape)
        slices = rng.random((grid.n_slices, 4, *grid.slice_shape), dtype=np.float32)
        slices /= slices.sum(1, keepdims=True)
        u0, u1 = 2, grid.n_units - 3
        slab = ProbabilitySlab(slices[u0 : u1 + 1], grid, u0, u1)
        region = (slice(1, 8), slice(2, 11), slice(0, 7))
        values, owned = slab.on_voxels(region)
        votes = np.full((4, *values.shape[1:]), 7, np.uint16)
        slab.add_votes(region, votes)
        reference = pack_votes(values, owned) + 7
        # Rounding of a sum at exactly half a level may differ by one between the two paths.
        assert np.abs(votes.astype(int) - reference.astype(int)).max() <= 1
        assert (votes[:, ~owned] == 7).all() and owned.any() and not owned.all()


def test_float16_bits_match_numpy():
    """The kernels write float16 outputs as bits (numba has no float16 on CPUs)."""
    from unified_framework.sun import _vote_kernels

    rng = np.random.default_rng(7)
    special = np.array(
        [
            0.0,
            -0.0,
            1.0,
            65504.0,
            65520.0,
            1e6,
            np.inf,
            -np.inf,
            np.nan,
            2**-24,
            2**-25,
            3 * 2**-26,
            6e-5,
            1 - 2**-12,
            0.1,
        ],
        np.float32,
    )
    values = np.concatenate(
        [
            special,
            rng.random(100_000, np.float32),
            rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 100_000),
        ]
    )
    values = values.astype(np.float32)
    # Ties of rounding: values exactly half way between two float16 numbers.
    halves = (np.arange(1, 2049, dtype=np.float32) + 0.5) * 2**-10
    values = np.concatenate([values, halves, -halves, halves * 2**-14])
    bits = np.empty(values.size, np.uint16)
    _vote_kernels.to_half_bits(values, bits)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(bits[~nan], expected[~nan].view(np.uint16))
    assert np.isnan(bits[nan].view(np.float16)).all()


def test_chunk_mirror_reads_each_input_chunk_once(tmp_path):
    import zarr

    from unified_framework.sun.inference.mirror import ChunkMirror, source_chunks

    volume = np.random.default_rng(3).random((20, 18, 23), dtype=np.float32)
    stored = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=volume.shape, chunks=(8, 8, 8), dtype="f4"
    )
    stored[:] = volume

    class Counting:
        shape, dtype, chunks = stored.shape, stored.dtype, stored.chunks
        reads = 0

        def __getitem__(self, box):
            Counting.reads += 1
            return stored[box]

    mirror = ChunkMirror(Counting(), tmp_path / "mirror", source_chunks(stored, (64, 64, 64)))
    boxes = [
        (slice(0, 20), slice(3, 17), slice(5, 21)),
        (slice(2, 19), slice(0, 18), slice(0, 23)),
        (slice(7, 9), slice(8, 9), slice(22, 23)),
    ]
    for _ in range(2):
        for box in boxes:
            np.testing.assert_array_equal(mirror[box], volume[box])
    assert Counting.reads == 3 * 3 * 3  # every chunk of the 3 x 3 x 3 grid, once
    damaged = tmp_path / "mirror" / "1.1.1.raw"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a truncated copy is read from the input again
    np.testing.assert_array_equal(mirror[boxes[1]], volume[boxes[1]])
    assert Counting.reads == 28
    # A copy with changed bytes of the right size is caught by its checksum (on a process' first read).
    changed = tmp_path / "mirror" / "2.0.1.raw"
    data = bytearray(changed.read_bytes())
    data[8:12] = np.float32(7.0).tobytes()
    changed.write_bytes(bytes(data))
    fresh = ChunkMirror(Counting(), tmp_path / "mirror", source_chunks(stored, (64, 64, 64)))
    np.testing.assert_array_equal(fresh[boxes[1]], volume[boxes[1]])
    assert Counting.reads == 29
    assert not list((tmp_path / "mirror").glob(".*"))  # no temporary files left
