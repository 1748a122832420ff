"""The shared training loop (unified_framework.training) and SUN's trainer on top of it."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from unified_framework.data import make_implant_phantom
from unified_framework.errors import InputError
from unified_framework.sun.training import SUNTrainer, TrainingConfig, train_sun
from unified_framework.sun.training.trainer import NETWORK_SHORTCUTS

torch.set_num_threads(1)
TINY = dict(axes="3", depth=2, base_width=4, input_size=16, batch_size=2, log_every=2)


class TwoConvs(torch.nn.Module):
    """Another 2D segmentation network (as HRNet would be): logits of the patch size."""

    def __init__(self, channels, classes):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, classes, 1),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.mark.training
def test_another_network_trains_and_resumes_through_the_same_loop(tmp_path):
    image, labels = make_implant_phantom((16, 16, 16), seed=1)
    config = TrainingConfig(**TINY, steps=6, val_every=3, checkpoint_every=2, patience=0)

    def factory(architecture):
        return TwoConvs(architecture.in_channels, architecture.num_classes)

    def trainer(path, **kwargs):
        return SUNTrainer([image], [labels], path, config, network_factory=factory, **kwargs)

    whole = trainer(tmp_path / "whole.pt").run()
    assert set(whole.model.state_dict) == {
        f"layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    paused = trainer(tmp_path / "part.pt", max_steps_this_run=4)
    assert paused.run().steps == 4 and not paused.finished
    resumed = trainer(tmp_path / "part.pt").run()
    assert resumed.steps == 6
    for key, value in whole.model.state_dict.items():
        torch.testing.assert_close(resumed.model.state_dict[key], value)
    lines = [json.loads(t) for t in (tmp_path / "part.pt.metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["phase"]) for line in lines] == [
        (2, "train"), (3, "val"), (4, "train"), (6, "train"), (6, "val"),
    ]  # fmt: skip
    assert {"loss", "dice", "lr", "throughput_px_per_s"} <= set(lines[0])


def test_a_damaged_checkpoint_is_refused_with_its_name(tmp_path):
    image, labels = make_implant_phantom((16, 16, 16), seed=1)
    (tmp_path / "m.pt.checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable SUN training checkpoint"):
        train_sun([image], [labels], tmp_path / "m.pt", TrainingConfig(**TINY, steps=1))


def test_divergence_names_the_step(tmp_path):
    image, labels = make_implant_phantom((16, 16, 16), seed=1)
    image = image.astype(np.float32)
    config = TrainingConfig(**TINY, steps=3, learning_rate=1e30, val_fraction=0)
    with pytest.raises(InputError, match="training diverged at step"):
        train_sun([image], [labels], tmp_path / "m.pt", config)


@pytest.mark.training
def test_network_fields_are_nested_and_old_flat_checkpoints_resume(tmp_path):
    image, labels = make_implant_phantom((16, 16, 16), seed=1)
    config = TrainingConfig(**TINY, steps=4, val_every=2, checkpoint_every=2, patience=0)
    assert config.network.depth == 2 and config.network.input_size == 16
    assert "depth" not in asdict(config) and asdict(config)["network"]["base_width"] == 4
    assert TrainingConfig.from_dict(asdict(config)) == config
    with pytest.raises(InputError, match="unknown keys widht"):
        TrainingConfig.from_dict({"widht": 3})
    whole = train_sun([image], [labels], tmp_path / "whole.pt", config)
    train_sun([image], [labels], tmp_path / "old.pt", config, max_steps_this_run=2)
    # Rewrite the checkpoint as one written before the nesting: the network's fields flat.
    path = tmp_path / "old.pt.checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    identity = json.loads(payload["identity"])
    network = identity["config"].pop("network")
    identity["config"].update({k: network[k] for k in NETWORK_SHORTCUTS})
    payload["identity"] = json.dumps(identity)
    torch.save(payload, path)
    resumed = train_sun([image], [labels], tmp_path / "old.pt", config)
    assert resumed.steps == 4
    for key, value in whole.model.state_dict.items():
        torch.testing.assert_close(resumed.model.state_dict[key], value)
    wider = TrainingConfig(**{**TINY, "base_width": 8}, steps=4)
    train_sun([image], [labels], tmp_path / "old2.pt", config, max_steps_this_run=2)
    with pytest.raises(InputError, match="different training configuration"):
        train_sun([image], [labels], tmp_path / "old2.pt", wider)
