"""HRNet segmentation network: shapes on odd sizes, MC dropout, user weights, the factory."""

from __future__ import annotations

import pytest
import torch

from unified_framework.errors import InputError
from unified_framework.networks import (
    HRNetConfig,
    HRNetSeg,
    build_network,
    load_backbone_weights,
    mc_dropout,
    network_config,
)


@pytest.fixture(scope="module")
def net() -> HRNetSeg:
    torch.manual_seed(0)
    return HRNetSeg(HRNetConfig(in_channels=2, num_classes=3, dropout=0.3)).eval()


@pytest.mark.parametrize("shape", [(33, 47), (64, 64), (17, 90)])
def test_logits_have_the_input_size_on_any_size(net, shape):
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        logits, features = net(x, return_features=True)
    assert logits.shape == (2, 3, *shape)
    assert logits.dtype == torch.float32
    assert features.shape == (2, net.feature_width)
    assert torch.isfinite(logits).all()


@pytest.mark.training
def test_training_step_reduces_the_loss_on_one_image():
    torch.manual_seed(1)
    net = HRNetSeg(HRNetConfig(num_classes=2, dropout=0.0))
    x = torch.randn(2, 1, 32, 32)
    target = (x[:, 0] > 0).long()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_mc_dropout_varies_and_restores_modes(net):
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        plain = [net(x) for _ in range(2)]
        with mc_dropout(net):
            sampled = [net(x) for _ in range(2)]
            batch_norms = [m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert torch.equal(plain[0], plain[1])
    assert not torch.equal(sampled[0], sampled[1])
    assert not any(batch_norms)  # normalisation stays in eval mode
    assert not net.training and not any(m.training for m in net.modules())


def test_user_backbone_weights_load_and_bad_files_are_refused(net, tmp_path):
    source = HRNetSeg(HRNetConfig(in_channels=2, num_classes=3))
    path = tmp_path / "backbone.pt"
    state = {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}
    state["classifier.weight"] = torch.zeros(1000, 2048)  # an ImageNet head: ignored
    torch.save(state, path)
    target = HRNetSeg(HRNetConfig(in_channels=2, num_classes=3))
    unused = load_backbone_weights(target, path)
    assert unused == ["classifier.weight"]
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="garbage.pt: not a readable weights file"):
        load_backbone_weights(target, garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"layer.weight": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="no weight fits"):
        load_backbone_weights(target, foreign)


def test_factory_builds_both_kinds_and_refuses_unknown_ones():
    assert isinstance(build_network("hrnet", {"num_classes": 2}), HRNetSeg)
    unet = build_network("unet", {"num_classes": 2, "depth": 2, "base_width": 4, "input_size": 32})
    assert unet(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(InputError, match="kind 'resnet'"):
        network_config("resnet", {})
    with pytest.raises(InputError, match="variant must be one of"):
        HRNetConfig(variant="hrnet_w999")
    with pytest.raises(InputError, match="invalid hrnet configuration"):
        network_config("hrnet", {"depth": 3})
