"""Tests for jaxconv.recovery on planted cases: permuted, rescaled, flipped copies are
recognised exactly; unrelated filters are not."""

import numpy as np
import pytest

from jaxconv import filters, recovery


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


def test_permutation_beyond_eight_filters(rng):
    big = rng.normal(size=(3, 3, 1, 10))
    perm = rng.permutation(10)
    matches = recovery.align(big[..., perm], big)
    assert [m.matched for m in matches] == [list(perm).index(i) for i in range(10)]


def _greedy_trap(n):
    """References r0, r1 and n learned filters where matching r0 first to its best filter X
    (cosine 0.8) leaves r1 nothing (0.0); the optimum gives r0 its second choice Y (0.7)
    and r1 X (0.6)."""
    e = np.eye(9)
    x = 0.8 * e[0] + 0.6 * e[1]
    y = 0.7 * e[0] + np.sqrt(1 - 0.49) * e[2]
    learned = [x, y] + [e[3 + k % 6] for k in range(n - 2)]  # unrelated to both references
    bank = np.stack([f.reshape(3, 3, 1) for f in learned], -1)
    ref = np.stack([e[0].reshape(3, 3, 1), e[1].reshape(3, 3, 1)], -1)
    return bank, ref


@pytest.mark.parametrize("n", [3, 12], ids=["exhaustive", "scipy"])
def test_assignment_is_optimal_not_greedy(n):
    bank, ref = _greedy_trap(n)
    # greedy would give r0 filter 0 (cosine 0.8) and r1 the best of the rest (0.0)
    matches = recovery.align(bank, ref, allow_flip=False)
    assert [m.matched for m in matches] == [1, 0]
    assert matches[1].cosine == pytest.approx(0.6)


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


# --- match_channels: a stack's layer up to permutation, positive scale and shift ---------


@pytest.fixture
def lines():
    return np.asarray(filters.stack([filters.vertical_line(), filters.horizontal_line()]))


def test_permutation_with_scales_is_matched_exactly(lines):
    learned = lines[..., ::-1] * np.array([0.3, 4.0])
    r = recovery.match_channels(learned, lines)
    assert r.recovered and r.kinds == ["matched", "matched"]
    assert [m.matched for m in r.matches] == [1, 0]
    assert [m.shift for m in r.matches] == [(0, 0), (0, 0)]
    assert r.matches[0].scale == pytest.approx(1 / 4.0)
    assert r.matches[1].scale == pytest.approx(1 / 0.3)


def test_negative_scale_is_not_a_match(lines):
    r = recovery.match_channels(-lines, lines)
    assert not r.recovered
    assert all(m.cosine <= 1e-12 and m.scale == 0.0 for m in r.matches)


def test_shifted_filter_matches_only_within_max_shift(lines):
    big = np.zeros((5, 5, 1, 2))
    big[1:4, 1:4] = lines  # the teacher filters centred in a 5x5 window
    learned = np.stack([recovery.shift_filter(big[..., 0], (0, 1)), big[..., 1]], -1)
    r = recovery.match_channels(learned, lines, max_shift=1)
    assert r.recovered and r.matches[0].shift == (0, 1) and r.matches[1].shift == (0, 0)
    unshifted = recovery.match_channels(learned, lines)
    assert not unshifted.recovered
    # rows (0, -1, 2, -1, 0) vs (0, 0, -1, 2, -1): dot -4, norms sqrt(6): cosine -2/3
    assert unshifted.matches[0].cosine == pytest.approx(-2 / 3)


def test_truncated_shift_in_a_3x3_window_is_found(lines):
    """A 3x3 window cannot hold the moved detector: the moved, truncated reference is what
    it is compared with (the held-out error, not the cosine, says whether it works)."""
    moved = recovery.shift_filter(lines[..., 0], (0, -1))
    learned = np.stack([moved, lines[..., 1]], -1)
    r = recovery.match_channels(learned, lines, max_shift=1)
    assert r.matches[0].shift == (0, -1) and r.matches[0].cosine == pytest.approx(1.0)


def test_dead_channel_needs_features(lines, rng):
    learned = np.concatenate([lines, -0.5 * np.ones((3, 3, 1, 1))], -1)
    x = rng.normal(size=(4, 10, 10))
    feats = np.stack([np.maximum(_correlate(x, learned[:, :, 0, c]), 0) for c in range(3)], -1)
    # an all-negative filter on non-negative data is all-zero after ReLU
    x_pos = np.abs(x)
    feats_pos = np.stack(
        [np.maximum(_correlate(x_pos, learned[:, :, 0, c]), 0) for c in range(3)], -1)
    assert feats_pos[..., 2].max() == 0.0
    assert recovery.match_channels(learned, lines, features=feats_pos).kinds[2] == "dead"
    assert recovery.match_channels(learned, lines).kinds[2] == "other"
    assert recovery.match_channels(learned, lines, features=feats).kinds[2] == "other"


def test_duplicated_channel_is_redundant(lines):
    moved = recovery.shift_filter(lines[..., 1], (1, 0))
    learned = np.concatenate([lines, 2.0 * lines[..., :1], moved[..., None]], -1)
    r = recovery.match_channels(learned, lines)
    assert r.kinds[:2] == ["matched", "matched"] and r.kinds[2] == "redundant"
    assert r.kinds[3] == "other"  # a shifted copy is a copy only where shifts are allowed
    # (in a 3x3 window the moved detector loses a row; with max_shift it is a moved copy)
    assert recovery.match_channels(learned, lines, max_shift=1).kinds[3] == "redundant"


def test_greedy_trap_with_match_channels():
    bank, ref = _greedy_trap(12)
    r = recovery.match_channels(bank, ref, min_cosine=0.5)
    assert [m.matched for m in r.matches] == [1, 0] and r.recovered


@pytest.mark.parametrize(
    ("learned", "reference", "kwargs", "match"),
    [
        (np.ones((3, 3, 1, 2)), np.ones((5, 5, 1, 2)), {}, "fit in its window"),
        (np.ones((3, 3, 2, 2)), np.ones((3, 3, 1, 2)), {}, "input channels"),
        (np.ones((3, 3, 1, 1)), np.ones((3, 3, 1, 2)), {}, "more reference filters"),
        (np.ones((3, 3, 1, 2)), np.ones((3, 3, 1, 2)), {"max_shift": -1}, "max_shift"),
        (np.ones((3, 3, 1, 2)), np.ones((3, 3, 1, 2)), {"features": np.ones((4, 3))},
         "one channel per learned filter"),
    ],
    ids=["window", "in-channels", "count", "shift", "features"],
)
def test_match_channels_errors(learned, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        recovery.match_channels(learned, reference, **kwargs)


def _correlate(x, f):
    """VALID cross-correlation of [N, H, W] with a 2-D filter, as a numpy loop."""
    kh, kw = f.shape
    n, h, w = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1))
    for i in range(kh):
        for j in range(kw):
            out += f[i, j] * x[:, i:i + h - kh + 1, j:j + w - kw + 1]
    return out
