"""Active learning end to end on a tiny pool: simulation cells, merge, kills, the project loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unified_framework.active_learning.acquisition import FUNCTIONS
from unified_framework.active_learning.pool import SliceId
from unified_framework.active_learning.project import Project
from unified_framework.active_learning.simulate import FULL, merge, run_cell
from unified_framework.active_learning.training import RoundConfig
from unified_framework.cli.main import main
from unified_framework.data import CLASS_NAMES, make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.io import write_volume

SHAPE = (10, 32, 32)
TINY = RoundConfig(steps=3, input_size=32, batch_size=2, checkpoint_every=2, log_every=1)


@pytest.fixture(scope="module")
def phantoms():
    train = [make_implant_phantom(SHAPE, seed=s) for s in (0, 1)]
    test = [make_implant_phantom(SHAPE, seed=7)]
    return train, test


def _cell(phantoms, out, function, seed=0, **kwargs):
    train, test = phantoms
    return run_cell(
        [i for i, _ in train],
        [lab for _, lab in train],
        [i for i, _ in test],
        [lab for _, lab in test],
        CLASS_NAMES,
        out,
        function,
        seed,
        initial=2,
        batch_size=2,
        max_labelled=4,
        config=TINY,
        mc_samples=2,
        device="cpu",
        **kwargs,
    )


@pytest.mark.training
def test_every_function_runs_two_rounds_and_the_curves_merge(phantoms, tmp_path):
    for function in (FULL, *FUNCTIONS):
        record = _cell(phantoms, tmp_path, function)
        assert record["done"]
        if function == FULL:
            assert record["points"][0]["labelled"] == 20
            continue
        assert [p["labelled"] for p in record["points"]] == [2, 4]
        assert len(set(record["labelled"])) == 4  # every query was a new (unlabelled) slice
        assert set(record["points"][0]["dice"]) == set(CLASS_NAMES)
    result = merge(tmp_path)
    assert set(result["functions"]) == set(FUNCTIONS)
    entry = result["functions"]["entropy"]
    assert entry["labelled"] == [2, 4] and entry["share"] == [0.1, 0.2]
    assert 0 <= entry["auc"]["mean"] <= 1 and result["full"]["mean_dice"] >= 0
    stored = json.loads((tmp_path / "curves.json").read_text())
    assert (
        stored["functions"]["random"]["mean_dice"]["mean"]
        == result["functions"]["random"]["mean_dice"]["mean"]
    )
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.training
def test_a_cell_killed_between_rounds_resumes_to_the_same_result(phantoms, tmp_path):
    whole = _cell(phantoms, tmp_path / "whole", "margin")

    def kill(line: str) -> None:
        raise KeyboardInterrupt  # progress is reported before the round's record is written

    with pytest.raises(KeyboardInterrupt):
        _cell(phantoms, tmp_path / "killed", "margin", progress=kill)
    path = tmp_path / "killed" / "cells" / "margin-seed0.json"
    assert not path.exists()  # killed before the first record: nothing half-written

    rounds = []

    def kill_after_first_record(line: str) -> None:
        rounds.append(line)
        if len(rounds) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _cell(phantoms, tmp_path / "killed", "margin", progress=kill_after_first_record)
    partial = json.loads(path.read_text())
    assert len(partial["points"]) == 1 and not partial["done"] and len(partial["labelled"]) == 4
    resumed = _cell(phantoms, tmp_path / "killed", "margin")
    assert resumed["labelled"] == whole["labelled"]
    assert [p["mean_dice"] for p in resumed["points"]] == pytest.approx(
        [p["mean_dice"] for p in whole["points"]]
    )
    with pytest.raises(InputError, match="a cell of other settings"):
        _cell(phantoms, tmp_path / "killed", "margin", axes="z,y")


def _write_pool(phantoms, folder):
    train, test = phantoms
    paths = []
    for n, (image, labels) in enumerate(train + test):
        write_volume(folder / f"v{n}.tif", image)
        write_volume(folder / f"v{n}_labels.tif", labels)
        paths.append((folder / f"v{n}.tif", folder / f"v{n}_labels.tif"))
    return paths


@pytest.mark.training
def test_project_loop_from_the_command_line(phantoms, tmp_path, capsys, monkeypatch):
    paths = _write_pool(phantoms, tmp_path)
    project_dir = tmp_path / "proj"
    assert (
        main(
            [
                "al",
                "init",
                str(project_dir),
                "--volume",
                str(paths[0][0]),
                "--classes",
                *CLASS_NAMES,
            ]
            + ["--held-out", str(paths[2][0]), str(paths[2][1]), "--batch", "3", "--steps", "3"]
            + ["--input-size", "32", "--train-batch", "2"]
        )
        == 0
    )
    assert oct(project_dir.stat().st_mode & 0o777) == "0o700"
    assert main(["al", "train", str(project_dir)]) == 2
    assert "no labelled slices yet" in capsys.readouterr().err

    assert main(["al", "query", str(project_dir)]) == 0
    first = [SliceId.parse(k) for k in capsys.readouterr().out.split()]
    assert len(first) == 3
    truth = phantoms[0][0][1]
    for sid in first:
        np.save(tmp_path / "l.npy", truth[sid.index])
        assert main(["al", "label", str(project_dir), sid.key, str(tmp_path / "l.npy")]) == 0
    assert main(["al", "train", str(project_dir)]) == 0
    assert "held-out Dice" in capsys.readouterr().out

    assert main(["al", "query", str(project_dir), "--function", "entropy"]) == 0
    second = [SliceId.parse(k) for k in capsys.readouterr().out.split()]
    assert len(second) == 3 and not set(second) & set(first)
    project = Project(project_dir)
    assert project.pending == second
    assert [r["function"] for r in project.rounds] == ["random", "entropy"]
    assert set(project.rounds[1]["uncertainty"]) == {"pool_entropy", "picked_entropy"}
    assert project.rounds[0]["model"] == "models/round-001.pt"
    assert project.state["labelled"][first[0].key]["by"]

    # bad input: one line each
    np.save(tmp_path / "bad.npy", np.full((32, 32), 9, np.uint8))
    assert main(["al", "label", str(project_dir), second[0].key, str(tmp_path / "bad.npy")]) == 2
    assert "label value 9 is outside the class list 0..3" in capsys.readouterr().err
    np.save(tmp_path / "small.npy", np.zeros((8, 8), np.uint8))
    assert main(["al", "label", str(project_dir), second[0].key, str(tmp_path / "small.npy")]) == 2
    assert "expected (32, 32) like the image" in capsys.readouterr().err
    assert main(["al", "query", str(project_dir), "--force", "--batch", "99"]) == 2
    assert "batch size is 99" in capsys.readouterr().err

    assert main(["al", "status", str(project_dir)]) == 0
    out = capsys.readouterr().out
    assert "labelled: 3" in out and "round 2: entropy" in out

    monkeypatch.setenv("MDLMA_USER", "somebody-else")
    assert main(["al", "status", str(project_dir)]) == 2
    assert "project of user" in capsys.readouterr().err


def test_a_kill_while_saving_labels_leaves_the_previous_state(phantoms, tmp_path, monkeypatch):
    paths = _write_pool(phantoms, tmp_path)
    project = Project.create(tmp_path / "p", [paths[0][0]], CLASS_NAMES, config=TINY)
    truth = phantoms[0][0][1]
    project.save_labels(SliceId(0, "z", 1), truth[1])

    from unified_framework.utils.workdir_manifest import Manifest

    def killed(self, state=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Manifest, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        project.save_labels(SliceId(0, "z", 2), truth[2])
    monkeypatch.undo()
    reopened = Project(tmp_path / "p")
    assert [s.key for s in reopened.labelled] == ["0:z:1"]
    np.testing.assert_array_equal(reopened.labels(SliceId(0, "z", 1)), truth[1])
    (tmp_path / "p" / "labels" / "0_z_1.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="0_z_1.npy: label file missing or damaged"):
        Project(tmp_path / "p")


@pytest.mark.training
def test_a_training_round_killed_mid_way_resumes_to_the_same_weights(phantoms, tmp_path):
    import torch

    from unified_framework.active_learning.pool import IGNORE, SlicePool
    from unified_framework.active_learning.training import train_round

    (image, labels), _ = phantoms[0]
    pool = SlicePool([image], "z")
    slices = [(pool.image(s), pool.label(labels, s, 4)) for s in pool.ids[2:5]]
    sparse = slices[0][1].copy()
    sparse[:, 16:] = IGNORE  # a partly labelled slice: the right half carries no loss
    slices[0] = (slices[0][0], sparse)
    config = RoundConfig(steps=4, input_size=32, batch_size=2, checkpoint_every=1, log_every=1)
    whole = train_round(slices, tmp_path / "whole.pt", config, class_names=CLASS_NAMES)
    with pytest.raises(InputError, match="stopped at step 2 of 4 on request; run it again"):
        train_round(
            slices, tmp_path / "cut.pt", config, class_names=CLASS_NAMES, max_steps_this_run=2
        )
    assert not (tmp_path / "cut.pt").exists() and (tmp_path / "cut.pt.checkpoint.pt").exists()
    resumed = train_round(slices, tmp_path / "cut.pt", config, class_names=CLASS_NAMES)
    for key, value in whole.state_dict.items():
        assert torch.equal(value, resumed.state_dict[key]), key
    lines = (tmp_path / "cut.pt.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    with pytest.raises(InputError, match="no labelled slices"):
        train_round([], tmp_path / "none.pt", config, class_names=CLASS_NAMES)
    empty = [(slices[0][0], np.full_like(sparse, IGNORE))]
    with pytest.raises(InputError, match="every labelled slice is empty"):
        train_round(empty, tmp_path / "none.pt", config, class_names=CLASS_NAMES)
    bad = [(slices[0][0], np.full_like(sparse, 6))]
    with pytest.raises(InputError, match="label value 6 is outside the class list 0..3"):
        train_round(bad, tmp_path / "none.pt", config, class_names=CLASS_NAMES)


@pytest.mark.training
def test_simulate_and_merge_from_the_command_line(phantoms, tmp_path, capsys):
    paths = _write_pool(phantoms, tmp_path)
    common = ["al", "simulate", "--pair", str(paths[0][0]), str(paths[0][1])]
    common += ["--test-pair", str(paths[2][0]), str(paths[2][1]), "--out", str(tmp_path / "sim")]
    common += ["--functions", "random", "entropy", "--seeds", "0", "--initial", "2", "--batch", "2"]
    common += ["--max-labelled", "4", "--network", "unet", "--steps", "2", "--input-size", "32"]
    assert main([*common, "--list"]) == 0
    assert capsys.readouterr().out.split("\n")[:3] == [
        "  0  full seed 0",
        "  1  random seed 0",
        "  2  entropy seed 0",
    ]
    for index in range(3):
        assert main([*common, "--cell-index", str(index), "--train-batch", "2"]) == 0
    assert main(["al", "merge", str(tmp_path / "sim")]) == 0
    out = capsys.readouterr().out
    assert "full pool: mean foreground Dice" in out and "entropy" in out
    assert (tmp_path / "sim" / "curves.png").is_file()
    assert main([*common[:5], str(paths[1][0]), *common[5:]]) == 2
    assert "--pair: 3 paths; expected image and label volumes in turn" in capsys.readouterr().err


def test_merge_combines_seeds_into_mean_sd_auc_and_the_95_percent_share(tmp_path):
    from unified_framework.active_learning.simulate import cell_name

    def cell(function, seed, dice):
        settings = {
            "function": function,
            "seed": seed,
            "pool_size": 10,
            "class_names": ["bg", "fg"],
        }
        settings["config"] = {"steps": 3, "seed": seed}
        points = [
            {"labelled": n, "share": n / 10, "dice": {"bg": 1.0, "fg": d}, "mean_dice": d}
            for n, d in zip((2, 4, 6), dice)
        ]
        path = tmp_path / "cells" / f"{cell_name(function, seed)}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"settings": settings, "points": points, "done": True}))

    for seed, full in ((0, 0.9), (1, 1.0)):
        cell("full", seed, [full])
        cell("random", seed, [0.5, 0.7, 0.9])
        cell("entropy", seed, [0.5, 0.9, 0.95])
    result = merge(tmp_path, plot=False)
    assert result["full"]["mean_dice"] == pytest.approx(0.95)
    entropy, random = result["functions"]["entropy"], result["functions"]["random"]
    assert entropy["mean_dice"]["mean"] == pytest.approx([0.5, 0.9, 0.95])
    # AUC: trapezoid over shares 0.2..0.6, divided by 0.4
    assert random["auc"]["mean"] == pytest.approx((0.6 * 0.2 + 0.8 * 0.2) / 0.4)
    # 95 % of each seed's full-pool Dice: 0.855 (seed 0) and 0.95 (seed 1)
    assert entropy["share_at_95"]["per_seed"] == [0.4, 0.6]
    assert random["share_at_95"]["per_seed"] == [0.6, None]
    assert not random["share_at_95"]["reached_by_all"]


@pytest.mark.training
def test_user_backbone_weights_are_loaded_for_hrnet_only(phantoms, tmp_path):
    import torch

    from unified_framework.active_learning.pool import SlicePool
    from unified_framework.active_learning.training import train_round
    from unified_framework.networks import HRNetConfig, HRNetSeg

    (image, labels), _ = phantoms[0]
    pool = SlicePool([image], "z")
    slices = [(pool.image(s), pool.label(labels, s, 4)) for s in pool.ids[3:5]]
    weights = tmp_path / "backbone.pt"
    torch.save(HRNetSeg(HRNetConfig(num_classes=4)).backbone.state_dict(), weights)
    config = RoundConfig(steps=1, input_size=32, batch_size=2, weights=str(weights))
    model = train_round(slices, tmp_path / "m.pt", config, class_names=CLASS_NAMES)
    assert model.provenance["round_config"]["weights"] == str(weights)
    unet = RoundConfig(network="unet", steps=1, input_size=32, batch_size=2, weights=str(weights))
    with pytest.raises(InputError, match="backbone weights apply to HRNet only"):
        train_round(slices, tmp_path / "u.pt", unet, class_names=CLASS_NAMES)


def test_hrnet_model_files_from_before_the_refinement_path_still_load(tmp_path):
    import torch

    from unified_framework.active_learning.model import ALModel, load_al_model, save_al_model
    from unified_framework.networks import HRNetConfig, HRNetSeg
    from unified_framework.sun.model_package import Normalization

    config = HRNetConfig(num_classes=2, refine=0)
    model = ALModel(
        "hrnet",
        config,
        HRNetSeg(config).state_dict(),
        Normalization(low=(0.0,), high=(1.0,), mean=(0.5,), std=(0.2,)),
        ["background", "bone"],
    )
    path = save_al_model(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=True)
    del payload["network"]["config"]["refine"]  # as written before the field existed
    torch.save(payload, path)
    assert load_al_model(path).config.refine == 0
