"""``mdlma io convert`` / ``mdlma io info``, and the examples of docs/io.md run as written."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from unified_framework.cli import io as io_cli
from unified_framework.cli.main import main
from unified_framework.image import STAINS
from unified_framework.io import SUPPORTED_FORMATS, read_volume, write_volume

SPACING = (2.0, 0.65, 0.7)


def random_volume(dtype="uint16", shape=(12, 20, 16)):
    return np.random.default_rng(2).integers(0, 1000, shape).astype(dtype)


def test_cli_format_choices_match_the_library():
    # --format lists the formats written; PNG and JPEG are read only.
    assert io_cli.FORMATS == tuple(f for f in SUPPORTED_FORMATS if f not in ("png", "jpeg"))
    assert io_cli.STAINS_NAMES == tuple(STAINS)


CHAIN = [
    ("vol.zarr", ["--chunks", "4"]),
    ("vol.nxs", []),
    ("vol.nii.gz", []),
    ("slices", []),
    ("series", ["--format", "dicom"]),
    ("back.tif", []),
]


def test_convert_chain_keeps_data_and_spacing(tmp_path, capsys):
    data = random_volume()
    source = write_volume(tmp_path / "vol.tif", data, SPACING)
    for name, options in CHAIN:
        target = tmp_path / name
        assert main(["io", "convert", str(source), str(target), *options]) == 0
        assert capsys.readouterr().out.startswith(f"wrote {target}: 12x20x16 uint16")
        volume = read_volume(target)
        np.testing.assert_array_equal(volume.data, data)
        assert volume.spacing == SPACING, name
        source = target


def test_convert_dataset_options_dtype_and_spacing(tmp_path):
    data = random_volume("float32")
    write_volume(tmp_path / "in.h5::/raw/volume", data, SPACING)
    status = main(
        [
            "io",
            "convert",
            str(tmp_path / "in.h5"),
            str(tmp_path / "out.h5"),
            "--dataset",
            "/raw/volume",
            "--out-dataset",
            "/seg/labels",
            "--dtype",
            "uint16",
            "--chunks",
            "6",
            "--spacing",
            "1",
            "2",
            "3",
        ]
    )
    assert status == 0
    volume = read_volume(tmp_path / "out.h5::/seg/labels")
    assert volume.dtype == np.uint16 and volume.spacing == (1.0, 2.0, 3.0)
    assert volume.metadata["chunks"] == [6, 6, 6]
    np.testing.assert_array_equal(volume.data, data.astype(np.uint16))


def test_info_json(tmp_path, capsys):
    data = random_volume("float32")
    data[0, 0, 0] = np.nan
    path = write_volume(tmp_path / "vol.nxs", data, SPACING)
    assert main(["io", "info", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["format"] == "hdf5"
        and report["shape"] == [12, 20, 16]
        and report["dtype"] == "float32"
    )
    assert report["spacing_um"] == list(SPACING)
    assert report["min"] == float(np.nanmin(data)) and report["max"] == float(np.nanmax(data))
    assert report["non_finite"] == 1
    assert report["metadata"]["dataset"] == "/entry/data/data"


def test_info_text(tmp_path, capsys):
    path = write_volume(tmp_path / "vol.tif", random_volume(), SPACING)
    assert main(["io", "info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "format      tiff" in lines and "dtype       uint16" in lines
    assert "voxel size  2 x 0.65 x 0.7 um" in lines
    assert any(line.startswith("range       ") for line in lines)
    assert main(["io", "info", str(path), "--no-range"]) == 0
    assert not any(line.startswith("range") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["io", "info", "{tmp}/missing.nii"], "missing.nii: no such file"),
        (["io", "convert", "{tmp}/vol.tif", "{tmp}/out.dat"], "unknown image format"),
        (
            ["io", "convert", "{tmp}/vol.tif", "{tmp}/out.zarr", "--dtype", "nonsense"],
            "--dtype 'nonsense' is not a numpy data type",
        ),
        (
            ["io", "convert", "{tmp}/vol.tif", "{tmp}/out.zarr", "--dtype", "uint8"],
            "do not fit uint8",
        ),
        (
            ["io", "convert", "{tmp}/vol.tif", "{tmp}/out.zarr", "--dataset", "/x"],
            "has no datasets",
        ),
    ],
)
def test_errors_are_one_line_with_exit_2(tmp_path, capsys, argv, expected):
    write_volume(tmp_path / "vol.tif", random_volume(), SPACING)
    status = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("mdlma: error: ") and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "out.zarr").exists()


def doc_commands(repo) -> list[str]:
    text = (repo / "docs" / "io.md").read_text()
    blocks = text.split("```bash")[1:]
    return [
        line.strip()
        for block in blocks
        for line in block.split("```")[0].splitlines()
        if line.startswith("mdlma ")
    ]


def test_docs_examples_work_as_written(repo, tmp_path, monkeypatch, capsys):
    commands = doc_commands(repo)
    assert len(commands) >= 10 and any("--format dicom" in c for c in commands)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    capsys.readouterr()
    phantom = read_volume("phantom.tif")
    for name in (
        "phantom.zarr",
        "phantom.nxs",
        "phantom.nii.gz",
        "phantom_slices",
        "phantom_copy.tif",
    ):
        np.testing.assert_array_equal(read_volume(name).data, phantom.data)
    labels = read_volume("labels.tif")
    for name in ("labels_dicom", "labels.h5::/segmentation/labels", "labels.nii"):
        np.testing.assert_array_equal(read_volume(name).data, labels.data)
    assert read_volume("labels16.zarr").spacing == (5.0, 2.5, 2.5)
    ihc = read_volume("ihc.ome.tif")
    assert ihc.axes == "yxc" and read_volume("ihc_hed.zarr").axes == "yxc"
    for name in ("ihc_grey.tif", "ihc_red.nii.gz", "ihc_labels.tif"):
        grey = read_volume(name)
        assert grey.shape == (512, 512) and grey.spacing == pytest.approx(ihc.spacing, rel=1e-6), (
            name
        )
