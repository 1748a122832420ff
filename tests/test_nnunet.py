"""nnU-Net v2 in the framework: export, plan, train, predict, import, and its 2d network along SUN's axes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unified_framework.cli.main import main
from unified_framework.data.phantom import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import Volume, read_volume, write_volume
from unified_framework.nnunet.dataset import Case, export_dataset
from unified_framework.nnunet.model import NnUNetModel, NnUNetSliceModel
from unified_framework.nnunet.paths import NnUNetPaths, nnunet_paths
from unified_framework.sun.slice_model import load_slice_model

CLASSES = ["background", "bone", "implant", "layer"]


def _paths(root: Path) -> NnUNetPaths:
    return NnUNetPaths(root / "raw", root / "pre", root / "res")


def _cases(root: Path, n: int = 2, size: int = 16, spacing=(5.0, 5.0, 5.0)) -> list[Case]:
    cases = []
    for seed in range(n):
        image, labels = make_implant_phantom((size,) * 3, seed=seed, spacing=spacing)
        write_volume(root / f"img{seed}.tif", Volume(image, spacing))
        write_volume(root / f"lab{seed}.h5", Volume(labels.astype(np.uint8), spacing))
        cases.append(Case([root / f"img{seed}.tif"], root / f"lab{seed}.h5"))
    return cases


def test_paths_from_configuration(tmp_path):
    env = {"MDLMA_HOME": str(tmp_path), "MDLMA_CONFIG": str(tmp_path / "none.toml")}
    assert nnunet_paths(env).preprocessed == tmp_path / "nnunet" / "nnUNet_preprocessed"
    env["MDLMA_NNUNET_RESULTS"] = str(tmp_path / "elsewhere")
    paths = nnunet_paths(env)
    assert paths.results == tmp_path / "elsewhere"
    assert paths.env(1)["nnUNet_results"] == str(tmp_path / "elsewhere")
    assert Path(paths.env()["nnUNet_extTrainer"], "nnUNetTrainerMDLMA.py").is_file()


def test_export_keeps_spacing_and_names(tmp_path):
    paths = _paths(tmp_path)
    result = export_dataset(
        _cases(tmp_path, spacing=(4.0, 5.0, 6.0)), paths, 7, "Phantom", label_names=CLASSES
    )
    assert result.folder == paths.raw / "Dataset007_Phantom"
    meta = json.loads((result.folder / "dataset.json").read_text())
    assert meta["labels"] == {n: i for i, n in enumerate(CLASSES)}
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 2
    image = read_volume(result.folder / "imagesTr" / "case_000_0000.nii.gz")
    labels = read_volume(result.folder / "labelsTr" / "case_001.nii.gz")
    assert image.spacing == pytest.approx((4.0, 5.0, 6.0))
    assert labels.data.dtype == np.uint8 and labels.shape == (16, 16, 16)
    # nnU-Net's own reader sees the same geometry (mm, z y x)
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, props = SimpleITKIO().read_images(
        [str(result.folder / "imagesTr" / "case_000_0000.nii.gz")]
    )
    assert data.shape == (1, 16, 16, 16)
    assert props["spacing"] == pytest.approx([0.004, 0.005, 0.006])


def test_export_refuses_what_nnunet_would(tmp_path):
    paths = _paths(tmp_path)
    cases = _cases(tmp_path)
    spacing = (5.0, 5.0, 5.0)
    write_volume(tmp_path / "frac.tif", Volume(np.full((16, 16, 16), 0.5, np.float32), spacing))
    with pytest.raises(InputError, match=r"frac\.tif: labels of dtype float32 hold non-integer"):
        export_dataset([Case(cases[0].images, tmp_path / "frac.tif")], paths, 8, "A")
    gap = np.zeros((16, 16, 16), np.uint8)
    gap[:4] = 2  # no class 1
    write_volume(tmp_path / "gap.tif", Volume(gap, spacing))
    with pytest.raises(InputError, match=r"values \[0, 2\]; nnU-Net needs consecutive"):
        export_dataset([Case(cases[0].images, tmp_path / "gap.tif")], paths, 8, "A")
    with pytest.raises(InputError, match="case has 2 channel"):
        export_dataset([cases[0], Case(cases[1].images * 2, cases[1].labels)], paths, 8, "A")
    assert not (paths.raw / "Dataset008_A").exists()  # nothing half-written
    export_dataset(cases, paths, 9, "First", label_names=CLASSES)
    with pytest.raises(InputError, match="dataset id 9: already used by .*Dataset009_First"):
        export_dataset(cases, paths, 9, "Second", label_names=CLASSES)
    with pytest.raises(InputError, match="exists already; use --overwrite"):
        export_dataset(cases, paths, 9, "First", label_names=CLASSES)
    export_dataset(cases, paths, 9, "First", label_names=CLASSES, overwrite=True)


def _fake_result(folder: Path, configuration: str) -> Path:
    folder.mkdir(parents=True)
    spacing = [0.005, 0.005] if configuration == "2d" else [0.005] * 3
    (folder / "plans.json").write_text(
        json.dumps({"configurations": {configuration: {"spacing": spacing}}})
    )
    (folder / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "fg": 1}, "channel_names": {"0": "CT"}})
    )
    (folder / "fold_all").mkdir()
    (folder / "fold_all" / "checkpoint_final.pth").write_bytes(b"")
    return folder


def test_model_folder_errors(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(InputError, match="junk: a folder but not an nnU-Net result"):
        load_slice_model(tmp_path / "junk")
    with pytest.raises(InputError, match="not an nnU-Net result folder"):
        NnUNetModel.load(tmp_path / "junk")
    three = _fake_result(tmp_path / "T__P__3d_fullres", "3d_fullres")
    with pytest.raises(InputError, match="only 2d models run along SUN's axes"):
        load_slice_model(three)
    with pytest.raises(InputError, match="no fold_3/checkpoint_final.pth; trained folds: all"):
        NnUNetModel.load(three, folds=[3])
    two = NnUNetModel.load(_fake_result(tmp_path / "T__P__2d", "2d"))
    assert two.is_2d and two.class_names == ["background", "fg"] and two.folds == ["all"]
    assert main(["nnunet", "import", str(tmp_path / "junk"), "--out", str(tmp_path / "m")]) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three 32³ phantoms exported and planned (2d, 3d_fullres); a 2d model of 1 epoch x 3 iterations."""
    from unified_framework.nnunet.run import plan_and_preprocess, train

    root = tmp_path_factory.mktemp("nnunet")
    paths = _paths(root)
    export_dataset(_cases(root, 3, 32), paths, 501, "Phantom", label_names=CLASSES)
    plan_and_preprocess(paths, 501, ["2d", "3d_fullres"], log=root / "plan.log")
    folder = train(
        paths, 501, "2d", "all", epochs=1, iterations=3, device="cpu", log=root / "2d.log"
    )
    image, labels = make_implant_phantom((32, 32, 32), seed=7)
    write_volume(root / "test.tif", Volume(image, (5.0, 5.0, 5.0)))
    return root, paths, {"2d": folder}


# Planning and each training take minutes on a loaded 2-core machine (nnU-Net's start-up
# and final validation dominate), more than the suite's 900 s per test when shared.
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_train_predict_import(trained, tmp_path):
    root, paths, folders = trained
    record = json.loads((folders["2d"] / "fold_all" / "mdlma_training.json").read_text())
    assert record["epochs"] == 1 and record["iterations_per_epoch"] == 3
    assert folders["2d"].name == "nnUNetTrainerMDLMA__nnUNetPlans__2d"
    out, prob = tmp_path / "seg.nii.gz", tmp_path / "prob.zarr"
    args = ["nnunet", "predict", str(root / "test.tif"), "--model", str(folders["2d"])]
    assert main([*args, "--out", str(out), "--probabilities", str(prob), "--device", "cpu"]) == 0
    seg = read_volume(out)
    assert seg.shape == (32, 32, 32) and seg.spacing == pytest.approx((5.0, 5.0, 5.0))
    assert set(np.unique(seg.data)) <= {0, 1, 2, 3}
    import zarr

    p = zarr.open_array(str(prob), mode="r")
    assert p.shape == (4, 32, 32, 32)
    np.testing.assert_allclose(np.asarray(p[:]).astype(np.float32).sum(0), 1.0, atol=2e-2)
    model = tmp_path / "models" / "phantom-2d"
    assert main(["nnunet", "import", str(folders["2d"]), "--out", str(model)]) == 0
    assert json.loads((model / "mdlma_model.json").read_text())["configuration"] == "2d"
    assert main(["nnunet", "import", str(folders["2d"]), "--out", str(model)]) == 2  # exists


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_3d_fullres(trained, tmp_path):
    from unified_framework.nnunet.run import train

    root, paths, _ = trained
    folder = train(
        paths, 501, "3d_fullres", "all", epochs=1, iterations=2, device="cpu", log=root / "3d.log"
    )
    assert folder.name == "nnUNetTrainerMDLMA__nnUNetPlans__3d_fullres"
    out = tmp_path / "seg3d.h5"
    args = ["nnunet", "predict", str(root / "test.tif"), "--model", str(folder), "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    assert read_volume(out).shape == (32, 32, 32)
    assert (
        main([*args[:-1], str(tmp_path / "x.tif"), "--axes", "9", "--device", "cpu"]) == 2
    )  # 3d: no axes


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_nnunet_2d_along_nine_axes(trained, tmp_path):
    """The 2d network runs through SUN's predictor and accumulator (mdlma sun predict takes the folder)."""
    from unified_framework.sun.inference import predict_volume

    root, paths, folders = trained
    model = load_slice_model(folders["2d"])
    assert isinstance(model, NnUNetSliceModel) and model.num_classes == 4
    image = read_volume(root / "test.tif").data
    z = predict_volume(model, image, axes="z", device="cpu")
    # one axis of SUN's predictor = nnU-Net's own 2d prediction (soft voting of one vote)
    from unified_framework.nnunet.model import predict_array

    labels, _ = predict_array(model.nnunet, image, (0.005,) * 3, device="cpu")
    assert np.mean(z.labels == labels) > 0.99
    out = tmp_path / "seg9.tif"
    assert (
        main(
            [
                "sun",
                "predict",
                str(root / "test.tif"),
                "--model",
                str(folders["2d"]),
                "--out",
                str(out),
                "--axes",
                "9",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert read_volume(out).shape == (32, 32, 32)
    entropy = read_volume(tmp_path / "seg9_entropy.tif").data
    assert 0 <= entropy.min() and entropy.max() <= 1


@pytest.mark.slow
@pytest.mark.training
@pytest.mark.timeout(2400)
def test_imported_model_through_tiled_inference(trained, tmp_path):
    """A trained, imported 2d model runs through mdlma infer (slice by slice) like nnU-Net's own predict."""
    import zarr

    from unified_framework.nnunet.model import predict_array

    root, _, folders = trained
    model = tmp_path / "models" / "phantom-2d"
    assert main(["nnunet", "import", str(folders["2d"]), "--out", str(model)]) == 0
    out = tmp_path / "tiled.zarr"
    args = ["infer", str(model), str(root / "test.tif"), "--out", str(out), "--tissue", "off"]
    assert main([*args, "--patch", "8", "32", "32", "--budget", "256"]) == 0
    tiled = zarr.open_group(str(out), mode="r")["0"][:]
    image = read_volume(root / "test.tif").data
    labels, _ = predict_array(NnUNetModel.load(model), image, (0.005,) * 3, device="cpu")
    assert tiled.shape == (32, 32, 32) and np.mean(tiled == labels) > 0.99
