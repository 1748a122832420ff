"""HRNet segmentation network: shapes on odd sizes, MC dropout, user weights, the factory."""

from __future__ import annotations

import numpy as np
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


def test_the_plain_head_still_works_and_the_refinement_changes_the_embedding():
    plain = HRNetSeg(HRNetConfig(num_classes=3, refine=0)).eval()
    refined = HRNetSeg(HRNetConfig(num_classes=3, refine=8)).eval()
    x = torch.randn(1, 1, 33, 47)
    with torch.no_grad():
        for net, width in ((plain, 240), (refined, 16)):  # w18_small branches: 16+32+64+128
            logits, features = net(x, return_features=True)
            assert logits.shape == (1, 3, 33, 47)
            assert features.shape == (1, width) == (1, net.feature_width)
    assert not hasattr(plain, "full_resolution")
    with pytest.raises(InputError, match="refine must be >= 0"):
        HRNetConfig(refine=-1)


def _thin_lines(rng, n):
    """Images with one-pixel lines a little brighter than noise, and the lines' labels."""
    target = np.zeros((n, 32, 32), np.int64)
    for image in target:
        for _ in range(3):
            if rng.random() < 0.5:
                image[rng.integers(2, 30), :] = 1
            else:
                image[:, rng.integers(2, 30)] = 1
    x = target[:, None].astype(np.float32) + 0.3 * rng.standard_normal((n, 1, 32, 32))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(target)


def _line_dice(refine: int) -> float:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = HRNetSeg(HRNetConfig(num_classes=2, dropout=0.0, refine=refine))
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(40):
        x, target = _thin_lines(rng, 4)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            net(x), target, weight=torch.tensor([1.0, 5.0])
        ).backward()
        optimizer.step()
    x, target = _thin_lines(np.random.default_rng(1), 4)
    with torch.no_grad():
        predicted = net.eval()(x).argmax(1)
    both = ((predicted == 1) & (target == 1)).sum().item()
    return 2 * both / max(1, (predicted == 1).sum().item() + (target == 1).sum().item())


@pytest.mark.training
def test_the_full_resolution_path_recovers_one_pixel_structures():
    # The plain head predicts at 1/4 of the input size and blurs one-pixel lines away.
    refined, plain = _line_dice(16), _line_dice(0)
    assert refined > 0.8
    assert refined > plain + 0.2
