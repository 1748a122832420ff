"""bioimage.io round trip: export a SUN model, validate with bioimageio.core, import, predict alike."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
import zarr
from test_inference import MB, grey_image, tiny_sun

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.inference import SunUNet, infer, load_model
from unified_framework.inference.bioimageio import BioimageioModel, export_sun, validate_package


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
    expected = np.load(tmp_path / "p" / "test_output.npy")
    np.save(tmp_path / "p" / "test_output.npy", expected[:, ::-1].copy())  # classes swapped
    with pytest.raises(InputError, match="invalid bioimage.io model package.*disagree"):
        validate_package(tmp_path / "p")
    assert (
        main(["model", "validate", str(tmp_path / "p"), "--format-only"]) == 0
    )  # the YAML is fine
    assert main(["model", "validate", str(tmp_path / "nothing")]) != 0
    assert "no such model package" in capsys.readouterr().err
