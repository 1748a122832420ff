"""Active-learning pool and acquisition functions on hand-made networks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unified_framework.active_learning.acquisition import (
    FUNCTIONS,
    k_center_greedy,
    score_pool,
    select,
)
from unified_framework.active_learning.pool import IGNORE, SliceId, SlicePool, check_labels
from unified_framework.errors import InputError


def _volume() -> np.ndarray:
    """Slices whose sign decides the class; slice 5 is all zeros (the ambiguous one)."""
    rng = np.random.default_rng(0)
    volume = np.where(rng.random((8, 16, 16)) > 0.5, 3.0, -3.0).astype(np.float32)
    volume[5] = 0.0
    return volume


def _sign_network(dropout: float = 0.0) -> torch.nn.Module:
    """Class 0 where the image is positive; at 0 two constant channels pull both ways.

    With all channels kept they cancel (a uniform prediction); dropping one of them
    gives a confident, random answer, so Monte-Carlo dropout disagrees most there.
    """
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(1, 6, 1)]
    if dropout:
        layers.append(torch.nn.Dropout2d(dropout))
    layers.append(torch.nn.Conv2d(6, 2, 1))
    net = torch.nn.Sequential(*layers)
    vote = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([3.0, -3.0, 3.0, -3.0, 0.0, 0.0]).view(6, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 4.0]))
        net[-1].weight.copy_(torch.stack([vote, -vote]).view(2, 6, 1, 1))
        net[-1].bias.zero_()
    return net.eval()


def identity(images: np.ndarray) -> np.ndarray:
    return images


def test_entropy_and_margin_rank_the_ambiguous_slice_first():
    pool = SlicePool([_volume()], axes="z")
    scores = score_pool(_sign_network(), pool, identity)
    assert scores.features.shape == (8, 6)
    labelled = [SliceId(0, "z", 0)]
    for function in ("entropy", "margin"):
        picked = select(function, pool.ids, labelled, 2, np.random.default_rng(0), scores)
        assert picked[0] == SliceId(0, "z", 5), function
    assert scores.entropy[5] == pytest.approx(1.0)


def test_bald_needs_dropout_and_finds_the_ambiguous_slice():
    pool = SlicePool([_volume()], axes="z")
    with pytest.raises(InputError, match="no dropout"):
        score_pool(_sign_network(), pool, identity, mc_samples=4)
    torch.manual_seed(0)
    scores = score_pool(_sign_network(0.5), pool, identity, mc_samples=8)
    assert scores.bald is not None and int(np.argmax(scores.bald)) == 5


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_queries_only_unlabelled_slices(function):
    pool = SlicePool([_volume(), _volume()[:, :12]], axes="z,x")
    scores = score_pool(_sign_network(0.3), pool, identity, mc_samples=2)
    labelled = pool.ids[::3]
    picked = select(function, pool.ids, labelled, 4, np.random.default_rng(1), scores)
    assert len(picked) == len(set(picked)) == 4
    assert not set(picked) & set(labelled)


def test_pool_smaller_than_the_batch_is_a_clear_error():
    pool = SlicePool([_volume()], axes="z")
    with pytest.raises(InputError, match="3 unlabelled slice.*batch size is 4"):
        select("random", pool.ids, pool.ids[:5], 4, np.random.default_rng(0))
    with pytest.raises(InputError, match="acquisition function 'best'"):
        select("best", pool.ids, [], 1, np.random.default_rng(0))


def test_coreset_picks_the_far_cluster_and_hybrid_stays_within_the_uncertain():
    features = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [9, 9], [9.1, 9]])
    assert k_center_greedy(features, np.array([0]), [1, 2, 3, 4], 1) == [4]
    assert k_center_greedy(features, np.array([], int), [0, 1, 3], 2) == [3, 0]


def test_diagonal_slices_ignore_the_corners_and_labels_are_checked():
    labels = (np.arange(6 * 7 * 8).reshape(6, 7, 8) % 3).astype(np.uint8)
    pool = SlicePool([labels.astype(np.float32)], axes="z,y+x")
    diagonal = next(s for s in pool.ids if s.axis == "y+x")
    slice_labels = pool.label(labels, diagonal, 3)
    assert (slice_labels == IGNORE).any() and slice_labels.shape == pool.slice_shape(diagonal)
    axial = pool.label(labels, SliceId(0, "z", 2), 3)
    np.testing.assert_array_equal(axial, labels[2])
    with pytest.raises(InputError, match="label value 7 is outside the class list 0..2"):
        check_labels(np.full((7, 8), 7), 3, "painted.png")
    with pytest.raises(InputError, match=r"shape \(3, 3\); expected \(7, 8\)"):
        check_labels(np.zeros((3, 3), int), 3, "painted.png", (7, 8))
    with pytest.raises(InputError, match="not in the pool"):
        pool.image(SliceId(0, "z", 99))
    with pytest.raises(InputError, match="expected volume:axis:index"):
        SliceId.parse("z12")
