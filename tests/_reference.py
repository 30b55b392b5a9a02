"""Independent numpy oracle for the conv op layer: plain loops in float64, no jax or lax.

Channels-last throughout (x: [N, *spatial, C], w: [*k, C // groups, O]); the helpers convert
layouts, resolve padding strings from their textbook formulas and apply pad modes with np.pad.
"""

from __future__ import annotations

import itertools

import numpy as np

NUMPY_PAD_MODE = {
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
    "symmetric": "symmetric",
}


# --- layouts ---------------------------------------------------------------------------------


def x_to_channels_last(x):
    """[N, C, *spatial] -> [N, *spatial, C]."""
    return np.moveaxis(np.asarray(x), 1, -1)


def x_to_channels_first(x):
    """[N, *spatial, C] -> [N, C, *spatial]."""
    return np.moveaxis(np.asarray(x), -1, 1)


def w_to_channels_last(w):
    """Torch weight [O, I, *k] -> [*k, I, O]."""
    w = np.asarray(w)
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def w_to_channels_first(w):
    """[*k, I, O] -> torch weight [O, I, *k]."""
    w = np.asarray(w)
    n = w.ndim - 2
    return np.transpose(w, (n + 1, n, *range(n)))


def flip_kernel(w):
    """Reverses every spatial axis of a channels-last kernel [*k, I, O]."""
    w = np.asarray(w)
    return w[(slice(None, None, -1),) * (w.ndim - 2)]


# --- padding arithmetic ----------------------------------------------------------------------


def effective_size(k, d):
    """Extent covered by k taps spaced d apart."""
    return d * (k - 1) + 1


def same_total(size, k_eff, stride):
    """Total SAME padding, in the form of TensorFlow's documentation (tf.nn.convolution)."""
    if size % stride == 0:
        return max(k_eff - stride, 0)
    return max(k_eff - size % stride, 0)


def padding_pairs(padding, sizes, k_eff, stride):
    """(low, high) per spatial dim for every padding form conv accepts."""
    n = len(sizes)
    if isinstance(padding, str):
        name = padding.upper()
        if name == "VALID":
            return [(0, 0)] * n
        if name in ("SAME", "SAME_LOWER"):
            pairs = []
            for size, k, s in zip(sizes, k_eff, stride, strict=True):
                total = same_total(size, k, s)
                before = total // 2  # TF puts the odd pixel after (bottom/right)
                after = total - before
                pairs.append((before, after) if name == "SAME" else (after, before))
            return pairs
        if name == "FULL":
            return [(k - 1, k - 1) for k in k_eff]
        if name == "CAUSAL":
            return [(k - 1, 0) for k in k_eff]
        raise ValueError(padding)
    if isinstance(padding, (int, np.integer)):
        return [(int(padding), int(padding))] * n
    pairs = []
    for p in padding:
        if isinstance(p, (int, np.integer)):
            pairs.append((int(p), int(p)))
        else:
            lo, hi = p
            pairs.append((int(lo), int(hi)))
    return pairs


def out_size(size, k_eff, stride, lo, hi):
    """Number of window positions, counted by walking the window along the padded axis."""
    count, start = 0, 0
    while start + k_eff <= size + lo + hi:
        count += 1
        start += stride
    return count


def pad_spatial(x, pairs, mode="zeros"):
    """Pads the spatial axes of a channels-last x with np.pad."""
    widths = [(0, 0), *[tuple(p) for p in pairs], (0, 0)]
    if mode == "zeros":
        return np.pad(x, widths)
    return np.pad(x, widths, mode=NUMPY_PAD_MODE[mode])


# --- the oracle ------------------------------------------------------------------------------


def conv_nd(x, w, stride, pairs, dilation, groups):
    """Cross-correlation, channels-last, explicit zero (low, high) pads; float64 loops.

    out[b, *o, g*og + j] = sum_{taps t, c < cg} xpad[b, *(o*s + t*d), g*cg + c] * w[*t, c, g*og + j]
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n = w.ndim - 2
    ksize = w.shape[:n]
    cg, cout = w.shape[n], w.shape[n + 1]
    og = cout // groups
    assert x.shape[-1] == cg * groups and cout % groups == 0
    xp = pad_spatial(x, pairs)
    outs = [
        out_size(x.shape[1 + i], effective_size(ksize[i], dilation[i]), stride[i], *pairs[i])
        for i in range(n)
    ]
    out = np.zeros((x.shape[0], *outs, cout))
    for tap in itertools.product(*[range(k) for k in ksize]):
        index = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, outs, stride, strict=True)
        )
        patch = xp[(slice(None), *index)]  # [N, *outs, C]
        for g in range(groups):
            xs = patch[..., g * cg : (g + 1) * cg]
            ws = w[tap][:, g * og : (g + 1) * og]
            for c in range(cg):
                out[..., g * og : (g + 1) * og] += xs[..., c : c + 1] * ws[c]
    return out


def conv_transpose_nd(y, w, stride, pairs, dilation, groups, output_padding):
    """Scatter form of the transposed conv (torch's col2im), channels-last, float64.

    Each y[b, *o, :] adds y @ w[tap].T at padded position o*s + t*d; the padded result is
    then cropped by (low, high) with output_padding extra at the high end.
    """
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    n = w.ndim - 2
    ksize = w.shape[:n]
    cg, cout = w.shape[n], w.shape[n + 1]
    og = cout // groups
    ny = y.shape[1:-1]
    full = [
        (ny[i] - 1) * stride[i] + effective_size(ksize[i], dilation[i]) + output_padding[i]
        for i in range(n)
    ]
    xp = np.zeros((y.shape[0], *full, cg * groups))
    for tap in itertools.product(*[range(k) for k in ksize]):
        index = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, ny, stride, strict=True)
        )
        for g in range(groups):
            contrib = y[..., g * og : (g + 1) * og] @ w[tap][:, g * og : (g + 1) * og].T
            xp[(slice(None), *index, slice(g * cg, (g + 1) * cg))] += contrib
    crop = tuple(slice(lo, f - hi) for (lo, hi), f in zip(pairs, full, strict=True))
    return xp[(slice(None), *crop, slice(None))]


def _per_dim(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def conv(x, w, *, stride=1, padding="VALID", dilation=1, groups=1, layout=None,
         pad_mode="zeros", flip=False):
    """Reference for ``jaxconv.conv`` with the same arguments (float64 numpy result)."""
    w = np.asarray(w, np.float64)
    x = np.asarray(x, np.float64)
    channels_first = layout is not None and not layout.upper().endswith("C")
    if channels_first:
        x, w = x_to_channels_last(x), w_to_channels_last(w)
    n = w.ndim - 2
    stride, dilation = _per_dim(stride, n), _per_dim(dilation, n)
    if flip:
        w = flip_kernel(w)
    sizes = x.shape[1:-1]
    k_eff = [effective_size(k, d) for k, d in zip(w.shape[:n], dilation, strict=True)]
    pairs = padding_pairs(padding, sizes, k_eff, stride)
    if pad_mode != "zeros":
        x = pad_spatial(x, pairs, pad_mode)
        pairs = [(0, 0)] * n
    out = conv_nd(x, w, stride, pairs, dilation, groups)
    return x_to_channels_first(out) if channels_first else out


def conv_transpose(y, w, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                   layout=None):
    """Reference for ``jaxconv.conv_transpose`` (float64 numpy result)."""
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    channels_first = layout is not None and not layout.upper().endswith("C")
    if channels_first:
        y, w = x_to_channels_last(y), w_to_channels_last(w)
    n = w.ndim - 2
    stride, dilation = _per_dim(stride, n), _per_dim(dilation, n)
    output_padding = _per_dim(output_padding, n)
    k_eff = [effective_size(k, d) for k, d in zip(w.shape[:n], dilation, strict=True)]
    pairs = padding_pairs(padding, y.shape[1:-1], k_eff, stride)
    out = conv_transpose_nd(y, w, stride, pairs, dilation, groups, output_padding)
    return x_to_channels_first(out) if channels_first else out
