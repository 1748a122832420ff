"""``mdlma sample pair`` and ``mdlma register``: result folders, printed quality, apply, bad input.

The pairs are 32-40³; one convexAdam run with reduced Adam iterations is shared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest_slurm import ensure_test_user

from unified_framework.cli.main import main
from unified_framework.io import read_volume, write_volume
from unified_framework.registration import load_field, warp

# The fast preset (coarse-to-fine Adam), also checked to arrive in the report.
FAST = ["--preset", "fast", "--device", "cpu"]


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair") / "pair"
    assert (
        main(
            [
                "sample",
                "pair",
                str(folder),
                "--shape",
                "40",
                "40",
                "40",
                "--seed",
                "4",
                "--displacement",
                "6",
            ]
        )
        == 0
    )
    return folder


@pytest.fixture(scope="module")
def registered(pair_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "reg"
    p = pair_dir
    code = main(
        [
            "register",
            "convexadam",
            str(p / "fixed.tif"),
            str(p / "moving.tif"),
            "--out",
            str(out),
            "--prealign",
            "none",
            "--fixed-labels",
            str(p / "fixed_labels.tif"),
            "--moving-labels",
            str(p / "moving_labels.tif"),
            "--landmarks",
            str(p / "landmarks.csv"),
            *FAST,
        ]
    )
    assert code == 0
    return out


def test_sample_pair_writes_a_consistent_pair(pair_dir):
    names = sorted(p.name for p in pair_dir.iterdir())
    assert names == [
        "fixed.tif",
        "fixed_labels.tif",
        "landmarks.csv",
        "moving.tif",
        "moving_labels.tif",
        "true_field.mha",
    ]
    field, spacing = load_field(pair_dir / "true_field.mha")
    moving_labels = read_volume(pair_dir / "moving_labels.tif").data
    fixed_labels = read_volume(pair_dir / "fixed_labels.tif").data
    assert spacing == (5.0, 5.0, 5.0)
    # the ground truth is exact: warping the moving labels with it gives the fixed labels
    assert np.array_equal(warp(moving_labels, field, spacing, "nearest"), fixed_labels)
    assert not np.array_equal(moving_labels, fixed_labels)
    assert not any(p.name.startswith(".") for p in pair_dir.parent.iterdir())


def test_register_convexadam_writes_the_result_folder_and_prints_the_table(
    registered, pair_dir, capsys
):
    names = sorted(p.name for p in registered.iterdir())
    assert names == ["field.mha", "jacobian.tif", "quality.json", "warped.tif", "warped_labels.tif"]
    report = json.loads((registered / "quality.json").read_text())
    assert report["method"] == "convexadam" and report["sources"]["fixed"].endswith("fixed.tif")
    assert report["parameters"]["coarse_niter"] == 30 and report["parameters"]["lr"] == 0.2
    assert report["labels"]["mean_dice"]["after"] > report["labels"]["mean_dice"]["before"]
    assert (
        report["landmarks"]["tre_median_voxels"]["after"]
        < 0.6 * report["landmarks"]["tre_median_voxels"]["before"]
    )
    assert report["jacobian"]["folding_fraction"] < 0.005
    # the printed table
    p = pair_dir
    code, out, _ = run(
        [
            "register",
            "affine",
            str(p / "fixed.tif"),
            str(p / "moving.tif"),
            "--out",
            str(registered.parent / "aff"),
            "--kind",
            "rigid",
            "--fixed-labels",
            str(p / "fixed_labels.tif"),
            "--moving-labels",
            str(p / "moving_labels.tif"),
        ],
        capsys,
    )
    assert code == 0
    assert "mean Dice" in out and "folding voxels" in out and "before" in out.splitlines()[1]


def test_apply_reproduces_the_warped_labels_and_refuses_a_field_of_another_grid(
    registered, pair_dir, tmp_path, capsys
):
    out = tmp_path / "labels_on_fixed.tif"
    code, _, _ = run(
        [
            "register",
            "apply",
            str(registered / "field.mha"),
            str(pair_dir / "moving_labels.tif"),
            "--out",
            str(out),
            "--interpolation",
            "nearest",
        ],
        capsys,
    )
    assert code == 0
    assert np.array_equal(read_volume(out).data, read_volume(registered / "warped_labels.tif").data)
    small = tmp_path / "small.tif"
    write_volume(small, np.zeros((20, 40, 40), np.float32), spacing=(5, 5, 5))
    code, _, err = run(
        [
            "register",
            "apply",
            str(registered / "field.mha"),
            str(small),
            "--out",
            str(tmp_path / "x.tif"),
        ],
        capsys,
    )
    assert code == 2 and "does not cover the volume" in err and err.count("\n") == 1
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(tmp_path / "scalar.mha")
    )
    code, _, err = run(
        [
            "register",
            "apply",
            str(tmp_path / "scalar.mha"),
            str(small),
            "--out",
            str(tmp_path / "x.tif"),
        ],
        capsys,
    )
    assert code == 2 and "expected a 3D displacement field" in err
    assert not (tmp_path / "x.tif").exists()


def test_binned_registration_warps_the_full_volume_block_by_block(pair_dir, tmp_path, capsys):
    p = pair_dir
    fixed, moving = tmp_path / "fixed.zarr", tmp_path / "moving.zarr"
    write_volume(fixed, read_volume(p / "fixed.tif"), chunks=16)
    write_volume(moving, read_volume(p / "moving.tif"), chunks=16)
    out = tmp_path / "reg"
    code, _, _ = run(
        [
            "register",
            "convexadam",
            str(fixed),
            str(moving),
            "--out",
            str(out),
            "--bin",
            "2",
            "--prealign",
            "none",
            "--grid-sp",
            "3",
            *FAST,
        ],
        capsys,
    )
    assert code == 0
    warped = read_volume(out / "warped.zarr")
    assert warped.shape == (40, 40, 40)
    field, spacing = load_field(out / "field.mha")
    assert field.shape == (3, 20, 20, 20) and spacing == (10.0, 10.0, 10.0)
    report = json.loads((out / "quality.json").read_text())
    assert report["bin"] == 2 and report["files"]["warped"] == "warped.zarr"
    # 'apply' with the binned field gives the same full-resolution warp
    code, _, _ = run(
        [
            "register",
            "apply",
            str(out / "field.mha"),
            str(moving),
            "--out",
            str(tmp_path / "again.zarr"),
        ],
        capsys,
    )
    assert code == 0
    np.testing.assert_allclose(read_volume(tmp_path / "again.zarr").data, warped.data, atol=1e-6)


def _one_line_error(argv, capsys, expected):
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert err.startswith("mdlma: error: ") and err.count("\n") == 1, err
    assert expected in err, err


def test_bad_inputs_give_one_line_errors_and_leave_nothing(pair_dir, tmp_path, capsys):
    p = pair_dir
    out = tmp_path / "out"
    flat = tmp_path / "flat.tif"
    write_volume(flat, np.zeros((40, 40), np.float32))
    _one_line_error(
        ["register", "convexadam", str(p / "fixed.tif"), str(flat), "--out", str(out), *FAST],
        capsys,
        "expected a 3D volume",
    )
    nan = read_volume(p / "moving.tif").data.copy()
    nan[5, 5, 5] = np.nan
    write_volume(tmp_path / "nan.tif", nan, spacing=(5, 5, 5))
    _one_line_error(
        ["register", "affine", str(p / "fixed.tif"), str(tmp_path / "nan.tif"), "--out", str(out)],
        capsys,
        "NaN",
    )
    write_volume(tmp_path / "empty.tif", np.zeros((40, 40, 40), np.uint8), spacing=(5, 5, 5))
    _one_line_error(
        [
            "register",
            "affine",
            str(p / "fixed.tif"),
            str(p / "moving.tif"),
            "--out",
            str(out),
            "--fixed-labels",
            str(p / "fixed_labels.tif"),
            "--moving-labels",
            str(tmp_path / "empty.tif"),
        ],
        capsys,
        "holds no label",
    )
    write_volume(
        tmp_path / "coarse.tif",
        read_volume(p / "moving.tif").data[::5, ::5, ::5],
        spacing=(25, 25, 25),
    )
    _one_line_error(
        [
            "register",
            "affine",
            str(p / "fixed.tif"),
            str(tmp_path / "coarse.tif"),
            "--out",
            str(out),
        ],
        capsys,
        "differs from the fixed volume's",
    )
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "coarse.tif",
        "empty.tif",
        "flat.tif",
        "nan.tif",
    ]  # no result folder, no temporaries


@pytest.mark.training
def test_voxelmorph_train_and_register_from_the_command_line(pair_dir, tmp_path, capsys):
    p = pair_dir
    model = tmp_path / "vxm.pt"
    code, out, _ = run(
        [
            "register",
            "voxelmorph-train",
            "--pair",
            str(p / "fixed.tif"),
            str(p / "moving.tif"),
            "--out",
            str(model),
            "--features",
            "8",
            "8",
            "8",
            "--steps",
            "3",
            "--patch-size",
            "32",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0 and "after 3 steps" in out
    assert (
        len((tmp_path / "vxm.pt.metrics.jsonl").read_text().splitlines()) == 1
    )  # log every 10: only the last step
    code, out, _ = run(
        [
            "register",
            "voxelmorph",
            str(p / "fixed.tif"),
            str(p / "moving.tif"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "reg"),
            "--prealign",
            "none",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "reg" / "field.mha").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_errors_are_one_line_for_an_unprivileged_user(pair_dir):
    """An output folder the user cannot write: the same one-line error, no traceback."""
    user = ensure_test_user()
    folder = Path(tempfile.mkdtemp(prefix="mdlma-register-"))
    try:
        folder.chmod(0o755)
        for name in ("fixed.tif", "moving.tif"):
            shutil.copy(pair_dir / name, folder / name)
            (folder / name).chmod(0o644)
        result = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                sys.executable,
                "-m",
                "unified_framework",
                "register",
                "affine",
                str(folder / "fixed.tif"),
                str(folder / "moving.tif"),
                "--out",
                str(folder / "out"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("mdlma: error: ") and result.stderr.count("\n") == 1, (
            result.stderr
        )
        assert "permission denied" in result.stderr
    finally:
        shutil.rmtree(folder)


def test_suffix_must_be_a_volume_suffix(pair_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "pair", str(tmp_path / "p"), "--suffix", "/../evil"])
    assert exit_info.value.code == 2
    assert "expected a file suffix" in capsys.readouterr().err
    assert not Path(tmp_path / "p").exists()


# --- SLURM template -----------------------------------------------------------------------


def test_register_template_renders_the_command_and_marks_fixed_and_moving_as_datasets(
    pair_dir, tmp_path, monkeypatch
):
    from unified_framework import hpc

    monkeypatch.chdir(pair_dir)
    template = hpc.load_template("register")
    assert template.parameters["fixed"].dataset and template.parameters["moving"].dataset
    params = {
        "fixed": "fixed.tif",
        "moving": "moving.tif",
        "fixed_labels": "fixed_labels.tif",
        "moving_labels": "moving_labels.tif",
        "landmarks": "landmarks.csv",
        "bin": 2,
        "gpus": 1,
        "extra_args": "--niter 40",
    }
    job = hpc.prepare("register", params, backend="local").scripts[0]
    d = pair_dir
    assert (
        f"mdlma register convexadam {d / 'fixed.tif'} {d / 'moving.tif'} --out {d / 'registration'} --prealign affine --device cuda --bin 2 "
        f"--fixed-labels {d / 'fixed_labels.tif'} --moving-labels {d / 'moving_labels.tif'} --landmarks {d / 'landmarks.csv'} --niter 40"
    ) in job.text
    assert "#SBATCH --gres=gpu:1" in job.directives
    script = tmp_path / "job.sh"
    script.write_text(job.text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    affine = hpc.prepare(
        "register",
        {"fixed": "fixed.tif", "moving": "moving.tif", "method": "affine", "prealign": "rigid"},
        backend="local",
    ).scripts[0]
    assert (
        f"mdlma register affine {d / 'fixed.tif'} {d / 'moving.tif'} --out {d / 'registration'} --kind rigid"
        in affine.text
    )


def test_register_template_runs_as_a_job(pair_dir, tmp_path, monkeypatch):
    """The local backend runs the rendered script as a real subprocess (no SLURM needed)."""
    from conftest_slurm import wait_for

    from unified_framework import hpc

    monkeypatch.setenv("MDLMA_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "work"
    shutil.copytree(pair_dir, work)
    monkeypatch.chdir(work)
    record = hpc.submit(
        "register",
        {
            "fixed": "fixed.tif",
            "moving": "moving.tif",
            "method": "affine",
            "prealign": "rigid",
            "cpus": 1,
            "fixed_labels": "fixed_labels.tif",
            "moving_labels": "moving_labels.tif",
        },
        backend="local",
    )
    jobs = wait_for(
        lambda: (lambda j: j if j and all(x.finished for x in j) else None)(
            hpc.status(record.job_ids, backend="local")
        ),
        timeout=120,
        what="the register job",
    )
    log = "".join(p.read_text() for p in Path(record.path).glob("slurm-*.out"))
    assert [j.state for j in jobs] == ["COMPLETED"], log
    report = json.loads((work / "registration" / "quality.json").read_text())
    assert report["method"] == "affine" and "labels" in report


def test_register_honours_origin_and_direction_of_the_files(pair_dir, tmp_path, capsys):
    """The moving scan moved in the world by its origin only: the rigid step's field
    changes by that shift, and the field and the block-wise warped volume (``--bin 2``)
    carry the fixed geometry."""
    from unified_framework.io import Volume

    # Rotated about the z axis (the phantom's long axis, along which a shift is hardly
    # measurable); shifted across it.
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    direction = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    origin = np.array([100.0, -50.0, 20.0])
    shift = np.array([0.0, -10.0, 10.0])  # world micrometres, 2 voxels each
    fixed, moving = read_volume(pair_dir / "fixed.tif"), read_volume(pair_dir / "moving.tif")
    write_volume(
        tmp_path / "fixed.zarr",
        Volume(fixed.data, fixed.spacing, {}, None, tuple(origin), direction),
    )
    medians = []
    for name, moving_origin in (("same", origin), ("shifted", origin + shift)):
        write_volume(
            tmp_path / f"{name}.zarr",
            Volume(moving.data, moving.spacing, {}, None, tuple(moving_origin), direction),
        )
        out = tmp_path / f"reg-{name}"
        code, stdout, err = run(
            [
                "register",
                "affine",
                str(tmp_path / "fixed.zarr"),
                str(tmp_path / f"{name}.zarr"),
                "--kind",
                "rigid",
                "--bin",
                "2",
                "--out",
                str(out),
                "--json",
            ],
            capsys,
        )
        assert code == 0, err
        field, _, field_origin, field_direction = load_field(out / "field.mha", geometry=True)
        np.testing.assert_allclose(field_origin, origin, atol=1e-3)
        np.testing.assert_allclose(field_direction, direction, atol=1e-6)
        world = np.tensordot(direction, field, axes=(1, 0)).reshape(3, -1)
        medians.append(np.median(world, axis=1))
        warped = read_volume(out / "warped.zarr")
        assert warped.shape == fixed.shape
        np.testing.assert_allclose(warped.origin, origin, atol=1e-3)
        np.testing.assert_allclose(warped.direction, direction, atol=1e-6)
        report = json.loads(stdout)
        assert report["images"]["ncc"]["after"] > report["images"]["ncc"]["before"]
    # warped(p) = moving(p + u) and the shifted moving holds at q what the other holds at q - shift.
    # Half a binned voxel: rigid MI at bin 2 varies by ~3 um with ITK's threading; a
    # direction applied the wrong way round (rotated by 30 or 60 degrees) misses x by > 6 um.
    np.testing.assert_allclose(medians[1] - medians[0], shift, atol=5.0)
