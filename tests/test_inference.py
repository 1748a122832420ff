"""Tiled inference: equal to whole-image sliding windows, seamless, background skipped, resumable, distributed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from unified_framework.errors import InputError
from unified_framework.inference import (
    Grid,
    SunUNet,
    TorchModule,
    finish,
    gaussian_weights,
    infer,
    load_model,
    pending_blocks,
    predict_array,
    prepare,
    run_blocks,
)
from unified_framework.io import write_volume
from unified_framework.sun.model_package import Normalization, SunModel, save_model
from unified_framework.sun.networks import UNet2D, UNetConfig

MB = 2**20


def tiny_sun(tmp_path, in_channels: int = 1, name: str = "m.pt"):
    config = UNetConfig(
        depth=2, base_width=4, input_size=16, in_channels=in_channels, num_classes=3
    )
    torch.manual_seed(0)
    c = in_channels
    model = SunModel(
        config,
        UNet2D(config).state_dict(),
        Normalization((0.0,) * c, (255.0,) * c, (100.0,) * c, (50.0,) * c),
        ["background", "a", "b"],
        (1.0, 1.0, 1.0),
        ("z", "y", "x"),
        "uint8",
        {},
    )
    return save_model(tmp_path / name, model)


def grey_image(tmp_path, shape=(72, 88), name="img.tif"):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, shape, dtype=np.uint8)
    return str(write_volume(tmp_path / name, data))


def test_grid_covers_image_and_tiles_have_full_size():
    grid = Grid((70, 45), (16, 16), (8, 8), (32, 32))
    seen = np.zeros((70, 45), int)
    for t in grid.all_tiles():
        assert all(s + 16 <= n for s, n in zip(t, (70, 45)))
        seen[t[0] : t[0] + 16, t[1] : t[1] + 16] += 1
    assert seen.min() >= 1
    # a block's tiles are exactly the tiles that overlap it
    for b in grid.blocks():
        region = grid.block_region(b)
        expect = [
            t
            for t in grid.all_tiles()
            if all(s < r.stop and s + 16 > r.start for s, r in zip(t, region))
        ]
        assert grid.tiles_in(b) == expect


@pytest.mark.parametrize(
    ("shape", "patch", "step", "block"),
    [
        ((70, 45), (16, 16), (8, 8), (32, 32)),
        ((37, 29), (8, 8), (5, 3), (6, 11)),
        ((9, 20, 21), (4, 8, 8), (2, 4, 4), (5, 9, 12)),
    ],
)
def test_each_tile_belongs_to_one_block_and_halos_reach_the_right_blocks(shape, patch, step, block):
    """Global grid: one owner per tile; contributors/receivers are exactly the blocks its tiles reach."""
    grid = Grid(shape, patch, step, block)
    owners = {}
    for b in grid.blocks():
        for t in grid.owned(b):
            assert t not in owners and all(
                r.start <= s < r.stop for s, r in zip(t, grid.block_region(b))
            )
            owners[t] = b
    assert sorted(owners) == sorted(grid.all_tiles())
    for b in grid.blocks():
        region = grid.block_region(b)
        reach = {
            owners[t]
            for t in grid.all_tiles()
            if owners[t] != b
            and all(s < r.stop and s + p > r.start for s, p, r in zip(t, patch, region))
        }
        assert grid.contributors(b) == sorted(reach)
        assert all(b in grid.receivers(c) for c in reach)
        extent = grid.extent(b)  # every own tile lies in the extent
        assert all(
            all(e.start <= s and s + p <= e.stop for s, p, e in zip(t, patch, extent))
            for t in grid.owned(b)
        )


def test_image_source_reads_the_same_directly_as_through_dask(tmp_path):
    """Boxes read through the array under the dask wrapper equal dask's own reads."""
    from unified_framework.inference.engine import ImageSource
    from unified_framework.io import Volume

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 255, (300, 280), dtype=np.uint8)
    paths = [
        str(write_volume(tmp_path / "a.ome.tif", Volume(grey, (1.0, 1.0)), chunks=64)),
        str(write_volume(tmp_path / "v.zarr", rng.integers(0, 9, (20, 40, 30), dtype=np.uint16))),
        str(
            write_volume(
                tmp_path / "c.ome.tif",
                Volume(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8), (1.0, 1.0), axes="yxc"),
            )
        ),
    ]
    assert ImageSource(paths[0])._direct is not None and ImageSource(paths[1])._direct is not None
    for path in paths:
        source = ImageSource(path)
        box = tuple(slice(3, min(s, 3 + 70)) for s in source.shape)
        direct = source.read(box)
        source._direct = None
        assert np.array_equal(direct, source.read(box)), path


def test_gaussian_is_symmetric_and_peaks_in_the_middle():
    w = gaussian_weights((9, 9))
    assert w[4, 4] == 1.0 and np.allclose(w, w[::-1, ::-1]) and w.min() > 0


def test_tiled_equals_whole_image_sliding_window_sun_unet(tmp_path):
    """Blockwise (several blocks, budget-bounded) == whole-image accumulation to 1e-5."""
    model_path = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    model = load_model(model_path)
    out, report = infer(
        model_path,
        image,
        tmp_path / "seg.zarr",
        patch=(16, 16),
        overlap=0.5,
        budget=2 * MB,
        block=(32, 32),
    )
    assert report.blocks_computed > 1  # the budget forced several blocks
    assert report.tiles_predicted == report.tiles_total  # each tile once, however many blocks
    group = zarr.open_group(str(out), mode="r")
    tiled = group["probabilities"][:]
    data = np.asarray(__import__("tifffile").imread(image), np.float32)[None]
    reference = predict_array(model, data, patch=(16, 16), overlap=0.5)
    assert np.abs(tiled - reference).max() < 1e-5
    assert np.array_equal(group["0"][:], reference.argmax(0))
    # and close to applying the U-Net to the whole image at once (border effects only)
    whole = model.predict(data[None])[0]
    assert (whole.argmax(0) == tiled.argmax(0)).mean() > 0.9


def test_pointwise_model_tiles_without_seams(tmp_path):
    """A per-pixel model must give exactly the whole-image answer: blending adds no seams."""
    torch.manual_seed(0)
    net = TorchModule(torch.nn.Conv2d(1, 3, 1), 2, 1, 3, (16, 16))
    model_path = tmp_path / "net.pt"
    model_path.write_bytes(b"stand-in")  # identifies the run only
    image = grey_image(tmp_path, (64, 80))
    out, _ = infer(model_path, image, tmp_path / "s.zarr", net, patch=(16, 16), budget=1 * MB)
    tiled = zarr.open_group(str(out), mode="r")["probabilities"][:]
    data = np.asarray(__import__("tifffile").imread(image), np.float32)[None, None]
    whole = net.predict(data)[0]
    assert np.abs(tiled - whole).max() < 1e-6


def test_3d_volume_slice_by_slice_and_flips(tmp_path):
    model_path = tiny_sun(tmp_path)
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 255, (20, 40, 36), dtype=np.uint8)
    path = str(write_volume(tmp_path / "v.zarr", volume))
    out, _ = infer(
        model_path, path, tmp_path / "seg.zarr", patch=(8, 16, 16), flips=True, budget=4 * MB
    )
    tiled = zarr.open_group(str(out), mode="r")["probabilities"][:]
    model = SunUNet(model_path, spatial_dims=3)
    reference = predict_array(model, volume[None].astype(np.float32), patch=(8, 16, 16), flips=True)
    assert np.abs(tiled - reference).max() < 1e-5


def test_background_tiles_are_skipped_on_a_slide(tmp_path):
    from unified_framework.io import Volume, read_volume

    model_path = tiny_sun(tmp_path, in_channels=3)
    slide = np.full((128, 128, 3), 245, np.uint8)  # white glass
    slide[8:40, 8:40] = (120, 60, 140)  # one piece of tissue
    path = str(write_volume(tmp_path / "slide.ome.tif", Volume(slide, (0.5, 0.5), axes="yxc")))
    out, report = infer(
        model_path, path, tmp_path / "seg.zarr", patch=(16, 16), budget=2 * MB, block=(32, 32)
    )
    assert report.tiles_skipped > report.tiles_total // 2
    assert report.tiles_predicted < report.tiles_total
    probs = zarr.open_group(str(out), mode="r")["probabilities"][:]
    assert (probs[0, 100:, 100:] == 1).all()  # background: class 0
    # the result is an OME-Zarr labels pyramid the I/O layer (and viewers) open
    labels = read_volume(out)
    assert labels.shape == (128, 128) and labels.spacing == (0.5, 0.5)


def test_resume_recomputes_only_unfinished_or_damaged_blocks(tmp_path, monkeypatch):
    model_path = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    expected, _ = infer(
        model_path, image, tmp_path / "a.zarr", patch=(16, 16), budget=2 * MB, block=(32, 32)
    )
    work = tmp_path / "b.zarr.work"
    prepare(work, model_path, image, patch=(16, 16), budget=2 * MB, block=(32, 32))
    total = len(pending_blocks(work)[0])
    # a "kill" after three blocks
    from unified_framework.inference import engine

    calls = {"n": 0}
    original = engine._Run.run_block

    def dying(self, index, *args, **kwargs):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(engine._Run, "run_block", dying)
    with pytest.raises(KeyboardInterrupt):
        run_blocks(work)
    monkeypatch.setattr(engine._Run, "run_block", original)
    engine._RUNS.clear()
    # a lost chunk of a finished block must not pass as done (it would read as zeros)
    (work / "result.zarr" / "0" / "0.0").unlink()  # block (0, 0) was finished first
    # a lost halo of a finished block is recomputed from that block's tiles
    (work / "halo" / "0_1-1_1").unlink()
    report = run_blocks(work)
    assert report.blocks_reused == 2 and report.blocks_computed == total - 2
    finish(work, tmp_path / "b.zarr")
    a = zarr.open_group(str(expected), mode="r")
    b = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    assert np.array_equal(a["probabilities"][:], b["probabilities"][:])
    assert not work.exists()


def test_parts_of_an_array_and_dask_workers_give_identical_output(tmp_path):
    model_path = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    one, _ = infer(
        model_path, image, tmp_path / "one.zarr", patch=(16, 16), budget=2 * MB, block=(32, 32)
    )
    # two SLURM-array-like parts, then the merge step
    work = tmp_path / "parts.work"
    prepare(work, model_path, image, patch=(16, 16), budget=2 * MB, block=(32, 32))
    reports = [run_blocks(work, part=part, parts=2) for part in (1, 0)]
    # part 1 ran first: its blocks next to part 0 waited for part 0's halos, finish() ends them
    assert reports[0].blocks_waiting > 0
    assert sum(r.tiles_predicted for r in reports) == reports[0].tiles_total
    finish(work, tmp_path / "parts.zarr")
    two, _ = infer(
        model_path, image, tmp_path / "dask.zarr", patch=(16, 16), budget=2 * MB, workers=2
    )
    arrays = [
        zarr.open_group(str(p), mode="r")["probabilities"][:]
        for p in (one, tmp_path / "parts.zarr", two)
    ]
    assert np.array_equal(arrays[0], arrays[1]), np.abs(arrays[0] - arrays[1]).max()
    # dask worker processes vs this one: the same blocks and order, at most a rounding apart
    assert np.abs(arrays[0] - arrays[2]).max() <= 1e-6


def test_finish_refuses_unfinished_runs(tmp_path):
    model_path = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    work = tmp_path / "w"
    prepare(work, model_path, image, patch=(16, 16), budget=2 * MB, block=(32, 32))
    run_blocks(work, part=0, parts=2)
    with pytest.raises(InputError, match="blocks are not finished"):
        finish(work, tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()
    run_blocks(work, part=1, parts=2)
    (work / "result.zarr" / "probabilities" / "0.0.0").unlink()  # a lost chunk of a done block
    with pytest.raises(InputError, match="blocks are not finished"):
        finish(work, tmp_path / "x.zarr")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(patch=(128, 16)), "larger than the image"),
        (dict(patch=(15, 16)), "multiple of"),
        (dict(patch=(16, 16), budget=10_000), "too small for one tile"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, kwargs, message):
    model_path = tiny_sun(tmp_path)
    image = grey_image(tmp_path)
    with pytest.raises(InputError, match=message):
        infer(model_path, image, tmp_path / "seg.zarr", **kwargs)
    # nothing written: neither the output nor an empty work folder (with its lock file)
    assert not list(tmp_path.glob("seg.zarr*"))


def test_model_that_does_not_fit_the_image_is_refused(tmp_path):
    rgb_model = tiny_sun(tmp_path, in_channels=3, name="rgb.pt")
    image = grey_image(tmp_path)
    with pytest.raises(InputError, match="channel"):
        infer(rgb_model, image, tmp_path / "seg.zarr")
    volume = str(write_volume(tmp_path / "v.tif", np.zeros((4, 32, 32), np.uint8)))
    net = TorchModule(torch.nn.Conv2d(1, 2, 1), 2, 1, 2, (16, 16))
    with pytest.raises(InputError, match="3D"):
        infer(rgb_model, volume, tmp_path / "v.zarr", net)


def test_cli_parts_then_finish_equal_one_run(tmp_path, capsys):
    from unified_framework.cli.main import main

    model_path = str(tiny_sun(tmp_path))
    image = grey_image(tmp_path)
    common = ["--patch", "16", "16", "--budget", "2", "--block", "32", "32"]
    assert main(["infer", model_path, image, "--out", str(tmp_path / "one.zarr"), *common]) == 0
    split = ["--out", str(tmp_path / "two.zarr"), "--work-dir", str(tmp_path / "w")]
    for part in ("0", "1"):
        assert (
            main(["infer", model_path, image, *split, *common, "--part", part, "--parts", "2"]) == 0
        )
    assert main(["infer", model_path, image, *split, "--finish"]) == 0
    a = zarr.open_group(str(tmp_path / "one.zarr"), mode="r")["probabilities"][:]
    b = zarr.open_group(str(tmp_path / "two.zarr"), mode="r")["probabilities"][:]
    assert np.array_equal(a, b)
    assert main(["infer", model_path, image, "--out", str(tmp_path / "one.zarr")]) != 0
    assert "already exists" in capsys.readouterr().err


def test_keras_model_through_the_same_interface(tmp_path):
    """A TensorFlow/Keras model tiles like any other."""
    import contextlib

    with contextlib.suppress(ImportError):  # before TensorFlow, or a later import crashes
        import triton  # noqa: F401
    import keras

    from unified_framework.inference.model import KerasModel

    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    path = tmp_path / "pointwise.keras"
    keras.Model(inputs, outputs).save(path)
    model = load_model(path)
    assert isinstance(model, KerasModel) and (model.in_channels, model.num_classes) == (1, 3)
    image = grey_image(tmp_path, (40, 48))
    out, _ = infer(path, image, tmp_path / "k.zarr", model, patch=(16, 16), budget=2 * MB)
    tiled = zarr.open_group(str(out), mode="r")["probabilities"][:]
    data = np.asarray(__import__("tifffile").imread(image), np.float32)[None, None]
    assert np.abs(tiled - model.predict(data)[0]).max() < 1e-5
