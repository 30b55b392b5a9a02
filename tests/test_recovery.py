"""Tests for jaxconv.recovery on planted cases: permuted, rescaled, flipped copies are
recognised exactly; unrelated filters are not."""

import numpy as np
import pytest

from jaxconv import recovery


@pytest.fixture
def bank(rng):
    return rng.normal(size=(3, 3, 1, 4))


def test_identical_bank_matches_itself(bank):
    matches = recovery.align(bank, bank)
    assert [m.matched for m in matches] == [0, 1, 2, 3]
    for m in matches:
        assert m.cosine == pytest.approx(1.0)
        assert m.scale == pytest.approx(1.0)
        assert m.max_abs_error < 1e-12


def test_permuted_rescaled_copy_is_recognised_exactly(bank):
    perm = [2, 0, 3, 1]
    scales = np.array([0.5, 3.0, 1.7, 0.2])
    learned = bank[..., perm] * scales
    matches = recovery.align(learned, bank)
    for i, m in enumerate(matches):
        assert m.matched == perm.index(i)
        assert m.cosine == pytest.approx(1.0)
        assert m.scale == pytest.approx(1 / scales[m.matched])
        assert m.max_abs_error < 1e-12


def test_flip_is_recognised_only_when_allowed(bank):
    learned = bank[::-1, ::-1]
    with_flip = recovery.align(learned, bank)
    assert all(m.flipped and m.cosine == pytest.approx(1.0) for m in with_flip)
    without = recovery.align(learned, bank, allow_flip=False)
    assert all(not m.flipped for m in without)
    assert min(m.cosine for m in without) < 0.99


def test_sign_is_recognised_only_when_allowed(bank):
    learned = -2.0 * bank
    pos = recovery.align(learned, bank, allow_flip=False)
    assert all(m.cosine < 0.99 for m in pos)
    assert all(m.scale >= 0 for m in pos)  # a ReLU layer cannot absorb a negative scale
    signed = recovery.align(learned, bank, allow_flip=False, allow_sign=True)
    for m in signed:
        assert m.cosine == pytest.approx(1.0)
        assert m.scale == pytest.approx(-0.5)
        assert m.max_abs_error < 1e-12


def test_unrelated_filter_is_not_recognised(rng):
    ref = np.zeros((3, 3))
    ref[1, :] = 1.0  # a horizontal bar
    unrelated = np.zeros((3, 3))
    unrelated[0, 0] = unrelated[2, 2] = 1.0
    m = recovery.align(unrelated, ref)[0]
    assert m.cosine < 0.5
    assert m.max_abs_error > 0.5


def test_noisy_copy_cosine_below_one(bank, rng):
    noisy = bank + 0.05 * rng.normal(size=bank.shape)
    s = recovery.summary(recovery.align(noisy, bank))
    assert 0.95 < s["min_cosine"] < 1.0
    assert 0.0 < s["max_abs_error"] < 0.3


def test_more_learned_than_reference(bank):
    matches = recovery.align(bank, bank[..., 2:3])
    assert len(matches) == 1 and matches[0].matched == 2


def test_greedy_matching_beyond_eight(rng):
    big = rng.normal(size=(3, 3, 1, 10))
    perm = rng.permutation(10)
    matches = recovery.align(big[..., perm], big)
    assert [m.matched for m in matches] == [list(perm).index(i) for i in range(10)]


@pytest.mark.parametrize(
    ("learned", "reference", "match"),
    [
        (np.ones(3), np.ones((3, 3)), "learned must have rank >= 2"),
        (np.ones((3, 3, 1, 2)), np.ones((5, 5, 1, 2)), "same per-filter shape"),
        (np.ones((3, 3, 1, 1)), np.ones((3, 3, 1, 2)), "more reference filters"),
    ],
    ids=["rank", "shape", "count"],
)
def test_errors(learned, reference, match):
    with pytest.raises(ValueError, match=match):
        recovery.align(learned, reference)


def test_flip_of_a_1d_bank_reverses_only_the_spatial_axis(rng):
    """A (k, in, n) bank flips along k only; the in-channel axis is not spatial."""
    bank = rng.normal(size=(3, 2, 2))
    for m in recovery.align(bank[::-1], bank):
        assert m.flipped and m.cosine == pytest.approx(1.0)
        assert m.max_abs_error < 1e-12


def test_single_filter_against_a_one_channel_bank(bank):
    """A single 2-D reference filter is a (kh, kw, 1, 1) bank, as the docstring promises."""
    (m,) = recovery.align(bank, bank[:, :, 0, 2])
    assert m.matched == 2 and m.cosine == pytest.approx(1.0)


def test_summary_of_nothing_is_a_value_error():
    with pytest.raises(ValueError, match="summary: matches is empty"):
        recovery.summary([])
