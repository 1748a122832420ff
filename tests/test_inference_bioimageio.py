"""bioimage.io round trips: export every model kind (SUN, active-learning HRNet, nnU-Net 2d and 3d,
Keras), validate with bioimageio.core, import, and predict alike through ``mdlma infer``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
import zarr
from test_inference import MB, grey_image, tiny_sun
from tiny_models import CLASSES, tiny_hrnet, tiny_keras, tiny_nnunet

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.inference import SunUNet, infer, load_model
from unified_framework.inference.bioimageio import (
    BioimageioModel,
    export_model,
    export_sun,
    unchanged_since_tested,
    validate_package,
)
from unified_framework.io import write_volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bioimageio")
    model = tiny_sun(folder)
    return model, export_sun(model, folder / "pkg.zip")


def test_round_trip_validates_and_predicts_like_sun(package, tmp_path, capsys):
    model, zipped = package
    assert validate_package(zipped).status == "passed"  # bioimageio.core.test_model
    assert main(["model", "import", str(zipped), "--out", str(tmp_path / "unpacked")]) == 0
    rdf = yaml.safe_load((tmp_path / "unpacked" / "rdf.yaml").read_text())
    steps = [p["id"] for p in rdf["inputs"][0]["preprocessing"]]
    assert steps[:4] == [
        "ensure_dtype",
        "scale_linear",
        "clip",
        "scale_linear",
    ]  # (the library adds a final ensure_dtype)
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"
    assert "torchscript" in rdf["weights"]
    imported = load_model(tmp_path / "unpacked")  # validated on load
    assert isinstance(imported, BioimageioModel) and imported.num_classes == 3
    x = np.random.default_rng(0).uniform(0, 255, (2, 1, 32, 48)).astype(np.float32)
    assert np.abs(imported.predict(x) - SunUNet(model).predict(x)).max() < 1e-5
    # and through the tiled engine
    image = grey_image(tmp_path)
    out, _ = infer(
        tmp_path / "unpacked", image, tmp_path / "seg.zarr", imported, patch=(16, 16), budget=2 * MB
    )
    ref, _ = infer(model, image, tmp_path / "ref.zarr", patch=(16, 16), budget=2 * MB)
    a = zarr.open_group(str(out), mode="r")["probabilities"][:]
    b = zarr.open_group(str(ref), mode="r")["probabilities"][:]
    assert np.abs(a - b).max() < 1e-5


def test_damaged_package_fails_the_library_check(package, tmp_path, capsys):
    _, zipped = package
    main(["model", "import", str(zipped), "--out", str(tmp_path / "p")])
    assert unchanged_since_tested(tmp_path / "p")  # loads skip the test while nothing changed
    expected = np.load(tmp_path / "p" / "test_output.npy")
    np.save(tmp_path / "p" / "test_output.npy", expected[:, ::-1].copy())  # classes swapped
    assert not unchanged_since_tested(tmp_path / "p")
    with pytest.raises(InputError, match="invalid bioimage.io model package.*disagree"):
        validate_package(tmp_path / "p")
    with pytest.raises(InputError, match="disagree"):  # a changed package is tested on load
        load_model(tmp_path / "p")
    assert (
        main(["model", "validate", str(tmp_path / "p"), "--format-only"]) == 0
    )  # the YAML is fine
    assert main(["model", "validate", str(tmp_path / "nothing")]) != 0
    assert "no such model package" in capsys.readouterr().err


def _two_fold_nnunet(root):
    """A 2d nnU-Net result folder with two differently seeded folds (their logits are averaged)."""
    result = tiny_nnunet(root / "a", "2d", seed=0)
    other = tiny_nnunet(root / "b", "2d", seed=1)
    (result / "fold_all").rename(result / "fold_0")
    shutil.move(other / "fold_all", result / "fold_1")
    return result


# kind: (make the model, image shape, tile, axes of the package's input, weights format)
KINDS = {
    "hrnet": (lambda d: tiny_hrnet(d / "al.pt"), (64, 96), (64, 64), "bcyx", "torchscript"),
    "nnunet-2d-two-folds": (_two_fold_nnunet, (24, 28), (16, 16), "bcyx", "torchscript"),
    "nnunet-3d-zscore": (
        lambda d: tiny_nnunet(d, "3d_fullres", normalization="ZScoreNormalization"),
        (16, 20, 24),
        (16, 16, 16),
        "bczyx",
        "torchscript",
    ),
    "keras": (lambda d: tiny_keras(d / "net.keras"), (24, 40), (16, 16), "byxc", "keras_v3"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_exports_validates_imports_and_infers_alike(kind, tmp_path):
    """mdlma model export (checked by bioimageio.core.test_model), mdlma model import, then
    mdlma infer on the package gives the native adapter's probabilities."""
    make, shape, tile, axes, weights = KINDS[kind]
    model = make(tmp_path)
    package, unpacked = tmp_path / "pkg.zip", tmp_path / "unpacked"
    # bioimageio.core.test_model runs the package's test input and compares it with the
    # test output our adapter computed: at export (the CLI's default; once here, to keep
    # the test short) and again at import and when mdlma infer loads the package
    checked = [] if kind == "nnunet-3d-zscore" else ["--no-validate"]
    assert main(["model", "export", str(model), "--out", str(package), *checked]) == 0
    assert main(["model", "import", str(package), "--out", str(unpacked)]) == 0
    rdf = yaml.safe_load((unpacked / "rdf.yaml").read_text())
    assert "".join(a["type"][0] for a in rdf["inputs"][0]["axes"]) == axes.replace(
        "z", "s"
    ).replace("y", "s").replace("x", "s")
    assert [a["id"] for a in rdf["inputs"][0]["axes"] if a["type"] == "space"] == [
        c for c in axes if c in "zyx"
    ]
    assert list(rdf["weights"]) == [weights]
    assert rdf["config"]["mdlma"]["class_names"] == CLASSES
    data = np.random.default_rng(3).integers(0, 255, shape, dtype=np.uint8)
    image = str(write_volume(tmp_path / "img.tif", data))
    common = ["--patch", *map(str, tile), "--tissue", "off", "--budget", "64"]
    for source, out in ((unpacked, "pkg.zarr"), (model, "native.zarr")):
        assert main(["infer", str(source), image, "--out", str(tmp_path / out), *common]) == 0
    ours = zarr.open_group(str(tmp_path / "pkg.zarr"), mode="r")
    native = zarr.open_group(str(tmp_path / "native.zarr"), mode="r")
    np.testing.assert_allclose(ours["probabilities"][:], native["probabilities"][:], atol=1e-4)


def test_nnunet_ct_normalisation_is_clip_and_scale(tmp_path):
    """CTNormalization (the plans' percentiles and foreground statistics) becomes clip + scale."""
    model = tiny_nnunet(tmp_path, "2d")  # CTNormalization: [5, 250], mean 120, std 50
    out = export_model(model, tmp_path / "pkg")
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    steps = rdf["inputs"][0]["preprocessing"]
    assert [p["id"] for p in steps][:4] == ["ensure_dtype", "scale_linear", "clip", "scale_linear"]
    lo, hi, mean, std = 5.0, 250.0, 120.0, 50.0
    v = np.array([0.0, 100.0, 300.0])  # below, inside, above the clip range
    step1, step3 = steps[1]["kwargs"], steps[3]["kwargs"]
    unit = np.clip(v * step1["gain"][0] + step1["offset"][0], 0, 1)
    np.testing.assert_allclose(
        unit * step3["gain"][0] + step3["offset"][0], (np.clip(v, lo, hi) - mean) / std, atol=1e-6
    )
    assert validate_package(out).status == "passed"
    rgb = tiny_nnunet(tmp_path / "rgb", "2d", normalization="RGBTo01Normalization")
    rdf = yaml.safe_load((export_model(rgb, tmp_path / "rgb.pkg") / "rdf.yaml").read_text())
    assert rdf["inputs"][0]["preprocessing"][1]["kwargs"]["gain"] == [1 / 255]


def test_unsupported_models_are_refused_in_one_line(tmp_path, capsys):
    rescale = tiny_nnunet(tmp_path / "r", "2d", normalization="RescaleTo01Normalization")
    with pytest.raises(
        InputError,
        match=r"nnU-Net normalisation RescaleTo01Normalization has no bioimage\.io equivalent",
    ):
        export_model(rescale, tmp_path / "a.zip")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a model")
    assert main(["model", "export", str(foreign), "--out", str(tmp_path / "b.zip")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot export this kind of model" in err[0]
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "b.zip").exists()
