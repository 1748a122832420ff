"""Every model kind of the module through the tiled engine's one interface: nnU-Net (imported, 2d and
3d_fullres), active-learning HRNet, Keras with its sidecar; one-line errors for models that do not fit."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from tiny_models import CLASSES, tiny_hrnet, tiny_keras, tiny_nnunet

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.inference import (
    MODEL_KINDS,
    KerasModel,
    SliceNetwork,
    infer,
    load_model,
    model_kind,
)
from unified_framework.io import write_volume

MB = 2**20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nnunet_models(tmp_path_factory):
    """Tiny nnU-Net 2d and 3d_fullres result folders, imported as ``mdlma nnunet import`` does."""
    root = tmp_path_factory.mktemp("nnunet")
    imported = {}
    for configuration in ("2d", "3d_fullres"):
        result = tiny_nnunet(root / "results", configuration)
        out = root / "models" / f"tiny-{configuration}"
        assert main(["nnunet", "import", str(result), "--out", str(out)]) == 0
        imported[configuration] = out
    return imported


def _grey(tmp_path, shape, name, seed=0):
    data = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    return data, str(write_volume(tmp_path / name, data))


def _probabilities(out) -> np.ndarray:
    return np.asarray(zarr.open_group(str(out), mode="r")["probabilities"][:], np.float32)


def test_imported_nnunet_2d_through_mdlma_infer(nnunet_models, tmp_path):
    """One tile covering the image is nnU-Net's own prediction of the whole slice."""
    from unified_framework.nnunet.model import NnUNetModel, NnUNetSliceModel

    model_dir = nnunet_models["2d"]
    assert "nnU-Net model folder" in (model_kind(model_dir) or "")
    image, path = _grey(tmp_path, (48, 40), "slide.tif")
    out = tmp_path / "seg.zarr"
    args = ["infer", str(model_dir), path, "--out", str(out), "--patch", "48", "40"]
    assert main([*args, "--tissue", "off", "--budget", "64"]) == 0
    whole = NnUNetSliceModel(NnUNetModel.load(model_dir)).predict_slices(
        image[None, None].astype(np.float32)
    )[0]
    tiled = _probabilities(out)
    assert tiled.shape == (len(CLASSES), 48, 40)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    labels = zarr.open_group(str(out), mode="r")["0"][:]
    assert np.array_equal(labels, whole.argmax(0))


def test_nnunet_2d_on_a_volume_slice_by_slice(nnunet_models, tmp_path):
    """Overlapping 3D tiles of a 2d model agree with nnU-Net's own slice-wise sliding window."""
    from unified_framework.nnunet.model import NnUNetModel, predict_array

    volume, path = _grey(tmp_path, (12, 32, 40), "vol.tif", seed=1)
    model = load_model(nnunet_models["2d"], spatial_dims=3)
    assert (model.spatial_dims, model.divisor, model.patch_size) == (3, (1, 4, 4), (16, 16, 16))
    out, _ = infer(
        nnunet_models["2d"], path, tmp_path / "v.zarr", model, patch=(4, 16, 16), budget=64 * MB
    )
    tiled = _probabilities(out)
    ours = tiled.argmax(0)
    theirs, _ = predict_array(NnUNetModel.load(nnunet_models["2d"]), volume, (0.005,) * 3)
    assert tiled.shape == (len(CLASSES), 12, 32, 40)
    assert np.mean(ours == theirs) > 0.95  # Gaussian sigma and tile placement differ slightly


def test_nnunet_3d_fullres_patches_and_refusals(nnunet_models, tmp_path):
    from unified_framework.nnunet.model import NnUNetModel, predict_array

    model_dir = nnunet_models["3d_fullres"]
    model = load_model(model_dir, spatial_dims=2)  # a 3D model stays 3D ...
    assert (model.spatial_dims, model.divisor, model.patch_size) == (3, (4, 4, 4), (16, 16, 16))
    _, flat = _grey(tmp_path, (32, 32), "flat.tif")
    with pytest.raises(InputError, match=r"flat\.tif: is 2D .* the model takes 3D images"):
        infer(model_dir, flat, tmp_path / "x.zarr", model)  # ... and refuses a 2D image
    _, grey = _grey(tmp_path, (16, 16, 16), "grey.tif")
    two = tiny_nnunet(tmp_path / "two", "3d_fullres", channels=2)
    with pytest.raises(InputError, match=r"grey\.tif: has 1 channel\(s\); the model expects 2"):
        infer(two, grey, tmp_path / "y.zarr", load_model(two))
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob("*.work/plan.json"))
    volume, path = _grey(tmp_path, (16, 24, 24), "vol.tif", seed=2)
    out, _ = infer(model_dir, path, tmp_path / "v.zarr", model, patch=(16, 16, 16), budget=64 * MB)
    theirs, _ = predict_array(NnUNetModel.load(model_dir), volume, (0.005,) * 3)
    # nnU-Net accumulates its Gaussian-weighted tiles in float16; labels agree where it is exact.
    assert np.mean(_probabilities(out).argmax(0) == theirs) > 0.95


def test_nnunet_per_patch_normalisation_is_batch_independent(tmp_path):
    """z-score normalisation is per patch: a tile's answer does not depend on its batch neighbours."""
    model = load_model(tiny_nnunet(tmp_path, "2d", normalization="ZScoreNormalization"))
    assert model.per_patch_schemes == ["ZScoreNormalization"]
    rng = np.random.default_rng(3)
    batch = rng.normal(100, 30, (2, 1, 16, 16)).astype(np.float32)
    batch[1] *= 5
    together = model.predict(batch)
    np.testing.assert_allclose(together[0], model.predict(batch[:1])[0], atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_hrnet_active_learning_model(tmp_path, dims):
    path = tiny_hrnet(tmp_path / "round-001.pt")
    assert "active-learning" in (model_kind(path) or "")
    model = load_model(path, spatial_dims=dims)
    assert isinstance(model, SliceNetwork) and model.class_names == CLASSES
    shape = (40, 48) if dims == 2 else (3, 40, 48)
    image, path_img = _grey(tmp_path, shape, "img.tif")
    patch = shape  # one tile: the engine's answer is the network's
    out, _ = infer(path, path_img, tmp_path / "h.zarr", model, patch=patch, budget=256 * MB)
    direct = model.predict(image[None, None].astype(np.float32))[0]
    np.testing.assert_allclose(_probabilities(out), direct, atol=1e-5)
    if dims == 2:
        rgb = tiny_hrnet(tmp_path / "rgb.pt", in_channels=3)
        with pytest.raises(InputError, match=r"img\.tif: has 1 channel\(s\); the model expects 3"):
            infer(rgb, path_img, tmp_path / "c.zarr", load_model(rgb))


def test_keras_sidecar_normalisation_logits_and_slices(tmp_path):
    path = tiny_keras(tmp_path / "net.keras", logits=True)
    model = load_model(path, spatial_dims=3)
    assert isinstance(model, KerasModel) and model.class_names == CLASSES
    assert (model.spatial_dims, model.patch_size, model.softmax) == (3, (16, 64, 64), True)
    volume, vol_path = _grey(tmp_path, (4, 24, 24), "vol.tif")
    probs = model.predict(volume[None, None].astype(np.float32))[0]
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    # the sidecar's normalisation is applied: slice 0 alone equals the 2D model on it
    flat = load_model(path, spatial_dims=2)
    x = (volume[0].astype(np.float32) - 100.0) / 50.0
    logits = np.asarray(flat.keras(x[None, ..., None]))[0]
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[:, 0], np.moveaxis(expected, -1, 0), atol=1e-5)
    out, _ = infer(path, vol_path, tmp_path / "k.zarr", model, patch=(4, 24, 24), budget=64 * MB)
    np.testing.assert_allclose(_probabilities(out), probs, atol=1e-5)


def test_unknown_models_name_every_kind(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="folder: not a model this framework can open") as err:
        load_model(tmp_path / "folder")
    assert all(kind in str(err.value) for kind in MODEL_KINDS)
    assert model_kind(tmp_path / "folder") is None
    (tmp_path / "m.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"m\.pt: not a readable SUN model package"):
        load_model(tmp_path / "m.pt")
