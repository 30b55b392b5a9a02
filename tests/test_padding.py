"""Tests for jaxconv._padding: string/int/pair padding vs independent formulas, and pad modes
vs numpy's np.pad."""

import math

import _reference as ref
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxconv import _padding as padding_lib

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")


# --- resolve_padding: strings ----------------------------------------------------------------


@pytest.mark.parametrize("name", STRINGS + ("same", "Same_Lower", "valid", "full", "causal"))
@pytest.mark.parametrize("stride", [1, 2, 3], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("k_eff", [1, 2, 3, 5], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("size", [1, 4, 7, 8], ids=lambda n: f"n{n}")
def test_resolve_string(name, stride, k_eff, size):
    got = padding_lib.resolve_padding("op", name, [size], [k_eff], [stride])
    assert got == tuple(ref.padding_pairs(name, [size], [k_eff], [stride]))


@pytest.mark.parametrize(
    ("size", "k", "stride", "same", "same_lower"),
    [
        (5, 3, 1, (1, 1), (1, 1)),
        (6, 4, 1, (1, 2), (2, 1)),  # even kernel: the odd pixel goes after (TF) / before
        (7, 3, 2, (1, 1), (1, 1)),
        (8, 3, 2, (0, 1), (1, 0)),
        (10, 1, 3, (0, 0), (0, 0)),
        (2, 5, 1, (2, 2), (2, 2)),
        (5, 2, 4, (0, 1), (1, 0)),
    ],
    ids=["odd", "even_k", "stride2_odd", "stride2_even", "k1", "k_gt_n", "stride_gt_k"],
)
def test_same_hand_checked(size, k, stride, same, same_lower):
    """A few SAME pads worked out by hand, pinning the independent formula itself."""
    assert ref.padding_pairs("SAME", [size], [k], [stride]) == [same]
    assert padding_lib.resolve_padding("op", "SAME", [size], [k], [stride]) == (same,)
    assert padding_lib.resolve_padding("op", "SAME_LOWER", [size], [k], [stride]) == (same_lower,)


@SETTINGS
@given(
    size=st.integers(1, 30),
    k=st.integers(1, 7),
    dilation=st.integers(1, 3),
    stride=st.integers(1, 5),
)
def test_string_output_sizes(size, k, dilation, stride):
    """SAME gives ceil(n / s) outputs, FULL n + k_eff - 1 (stride 1), CAUSAL n (stride 1)."""
    k_eff = padding_lib.effective_kernel([k], [dilation])[0]
    assert k_eff == ref.effective_size(k, dilation)
    for name in ("SAME", "SAME_LOWER"):
        ((lo, hi),) = padding_lib.resolve_padding("op", name, [size], [k_eff], [stride])
        assert padding_lib.output_size(size, k_eff, stride, lo, hi) == math.ceil(size / stride)
        assert ref.out_size(size, k_eff, stride, lo, hi) == math.ceil(size / stride)
        assert 0 <= hi - lo <= 1 if name == "SAME" else 0 <= lo - hi <= 1
    ((lo, hi),) = padding_lib.resolve_padding("op", "FULL", [size], [k_eff], [stride])
    assert padding_lib.output_size(size, k_eff, 1, lo, hi) == size + k_eff - 1
    ((lo, hi),) = padding_lib.resolve_padding("op", "CAUSAL", [size], [k_eff], [stride])
    assert (lo, hi) == (k_eff - 1, 0)
    assert padding_lib.output_size(size, k_eff, 1, lo, hi) == size


@SETTINGS
@given(
    size=st.integers(1, 20),
    k_eff=st.integers(1, 9),
    stride=st.integers(1, 4),
    lo=st.integers(0, 4),
    hi=st.integers(0, 4),
)
def test_output_size_matches_walk(size, k_eff, stride, lo, hi):
    if k_eff <= size + lo + hi:
        got = padding_lib.output_size(size, k_eff, stride, lo, hi)
        assert got == ref.out_size(size, k_eff, stride, lo, hi)


def test_resolve_multi_dim_strings():
    sizes, k_eff, stride = [7, 8, 5], [3, 4, 1], [2, 1, 3]
    for name in STRINGS:
        got = padding_lib.resolve_padding("op", name, sizes, k_eff, stride)
        assert got == tuple(ref.padding_pairs(name, sizes, k_eff, stride))


# --- resolve_padding: ints, sequences, pairs -------------------------------------------------


@pytest.mark.parametrize(
    ("padding", "want"),
    [
        (0, ((0, 0), (0, 0))),
        (2, ((2, 2), (2, 2))),
        (np.int64(1), ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        ([3, 0], ((3, 3), (0, 0))),
        (((1, 2), (0, 3)), ((1, 2), (0, 3))),
        ([[1, 2], [0, 3]], ((1, 2), (0, 3))),
        ((1, (0, 2)), ((1, 1), (0, 2))),
        ((np.int32(2), (np.int64(0), 1)), ((2, 2), (0, 1))),
    ],
    ids=["int0", "int", "np_int", "per_dim", "list", "pairs", "nested_lists", "mixed", "np_mixed"],
)
def test_resolve_explicit(padding, want):
    got = padding_lib.resolve_padding("op", padding, [6, 6], [3, 3], [1, 1])
    assert got == want
    assert all(type(v) is int for pair in got for v in pair)


def test_resolve_one_dim_pair():
    assert padding_lib.resolve_padding("op", [(1, 2)], [5], [3], [1]) == ((1, 2),)
    assert padding_lib.resolve_padding("op", (4,), [5], [3], [1]) == ((4, 4),)


@pytest.mark.parametrize(
    ("padding", "exc", "match"),
    [
        ("SAEM", ValueError, r"^op: unknown padding 'SAEM'; expected one of 'VALID', 'SAME', "
                             r"'SAME_LOWER', 'FULL', 'CAUSAL'"),
        ("", ValueError, r"unknown padding ''"),
        ((1, 2, 3), ValueError, r"^op: padding must have one entry per spatial dim \(2\), got 3"),
        ([(1, 2)], ValueError, r"one entry per spatial dim \(2\), got 1"),
        (-1, ValueError, r"^op: padding must be non-negative, got -1"),
        (((0, -1), (0, 0)), ValueError, r"non-negative, got \(\(0, -1\), \(0, 0\)\)"),
        ((1, -2), ValueError, r"non-negative"),
        (1.5, TypeError, r"^op: padding must be a string, an int or a sequence, got 1.5"),
        (True, TypeError, r"padding must be a string, an int or a sequence, got True"),
        (None, TypeError, r"got None"),
        (((1, 2, 3), 0), TypeError, r"^op: each padding entry must be an int or a \(low, high\)"),
        ((1.0, 2), TypeError, r"each padding entry .* got 1.0"),
        (((1, 2.0), 0), TypeError, r"each padding entry"),
    ],
    ids=["unknown", "empty", "too_long", "too_short", "neg_int", "neg_pair", "neg_seq",
         "float", "bool", "none", "triple", "float_entry", "float_in_pair"],
)
def test_resolve_errors(padding, exc, match):
    with pytest.raises(exc, match=match):
        padding_lib.resolve_padding("op", padding, [6, 6], [3, 3], [1, 1])


def test_check_kernel_fits():
    padding_lib.check_kernel_fits("op", [3], [5], [(1, 1)])  # exactly fits
    with pytest.raises(
        ValueError,
        match=r"^op: the kernel \(effective size 5 on spatial dim 1\) is larger than the "
        r"padded input \(2 \+ 1 \+ 1 = 4\)",
    ):
        padding_lib.check_kernel_fits("op", [9, 2], [3, 5], [(0, 0), (1, 1)])
    with pytest.raises(ValueError, match=r"the window \(effective size 4"):
        padding_lib.check_kernel_fits("op", [3], [4], [(0, 0)], what="window")


# --- pad(): modes vs numpy -------------------------------------------------------------------

MODES = ("reflect", "replicate", "circular", "symmetric")


def _max_width(mode, size):
    """Widest pad each mode accepts on an axis of ``size`` (torch's rules; edge has none)."""
    return {"reflect": size - 1, "replicate": math.inf}.get(mode, size)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("pads", "axes"),
    [
        (((1, 1), (1, 1)), (1, 2)),
        (((2, 0), (0, 3)), (1, 2)),
        (((0, 0), (2, 1)), (1, 2)),
        (((3, 1), (1, 2)), (2, 3)),
    ],
    ids=["nhwc_sym", "nhwc_asym", "nhwc_one_axis", "nchw_asym"],
)
@pytest.mark.slow
def test_pad_vs_numpy(mode, pads, axes, rng):
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    got = padding_lib.pad("op", jnp.asarray(x), pads, mode, axes)
    widths = [(0, 0)] * 4
    for a, p in zip(axes, pads, strict=True):
        widths[a] = p
    want = np.pad(x, widths, mode=ref.NUMPY_PAD_MODE[mode])
    np.testing.assert_array_equal(np.asarray(got), want)


@SETTINGS
@given(
    mode=st.sampled_from(MODES),
    size=st.integers(1, 6),
    lo=st.integers(0, 7),
    hi=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_pad_property(mode, size, lo, hi, seed):
    x = np.random.default_rng(seed).standard_normal((1, size, 2)).astype(np.float32)
    if max(lo, hi) > _max_width(mode, size):
        with pytest.raises(ValueError, match=rf"^op: {mode} padding \({lo}, {hi}\) must be"):
            padding_lib.pad("op", jnp.asarray(x), ((lo, hi),), mode, (1,))
        return
    got = padding_lib.pad("op", jnp.asarray(x), ((lo, hi),), mode, (1,))
    want = np.pad(x, [(0, 0), (lo, hi), (0, 0)], mode=ref.NUMPY_PAD_MODE[mode])
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize(
    ("mode", "pads", "match"),
    [
        ("reflect", ((4, 0),), r"^op: reflect padding \(4, 0\) must be smaller than the input "
                               r"size 4 on spatial dim 0; use pad_mode='symmetric' or 'replicate'"),
        ("reflect", ((0, 7),), r"reflect padding \(0, 7\)"),
        ("circular", ((5, 0),), r"^op: circular padding \(5, 0\) must be at most the input size 4"),
        ("symmetric", ((1, 5),), r"^op: symmetric padding \(1, 5\) must be at most the input"),
    ],
    ids=["reflect_eq", "reflect_gt", "circular", "symmetric"],
)
def test_pad_errors(mode, pads, match):
    with pytest.raises(ValueError, match=match):
        padding_lib.pad("op", jnp.zeros((1, 4, 1)), pads, mode, (1,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pads", [(1, 1), (0, 2), (3, 0)], ids=["both", "high", "low"])
def test_pad_rejects_padding_an_empty_axis(mode, pads):
    """Issue 14: replicate on an empty axis raised numpy's "Cannot apply 'edge' padding to
    empty axis"; every mode copies input values, so each names the op, mode and dim."""
    x = jnp.zeros((1, 4, 0, 2))
    with pytest.raises(
        ValueError,
        match=rf"^op: pad_mode='{mode}' cannot pad spatial dim 1, which is empty \(size 0; "
              rf"padding \({pads[0]}, {pads[1]}\)\).*or use pad_mode='zeros'\.$",
    ):
        padding_lib.pad("op", x, ((1, 1), pads), mode, (1, 2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_pad_leaves_an_unpadded_empty_axis_alone(mode):
    x = np.zeros((1, 0, 3, 2), np.float32)
    got = padding_lib.pad("op", jnp.asarray(x), ((0, 0), (1, 2)), mode, (1, 2))
    assert got.shape == (1, 0, 6, 2)


def test_vocabulary():
    assert padding_lib.PADDING_STRINGS == STRINGS
    assert set(padding_lib.PAD_MODES) == {"zeros", *MODES}
