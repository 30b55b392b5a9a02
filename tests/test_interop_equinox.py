"""jaxconv.interop.equinox.Conv against equinox.nn.Conv: same params, same outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")
jeqx = pytest.importorskip("jaxconv.interop.equinox")

CASES = {
    "1d_stride_dil_groups": ((1, 4, 6, 3), dict(stride=2, padding=1, dilation=2, groups=2),
                             (4, 13)),
    "2d_same_reflect": ((2, 3, 5, (3, 2)), dict(padding="SAME", padding_mode="REFLECT"),
                        (3, 9, 8)),
    "2d_same_lower_circular": ((2, 2, 3, 4), dict(padding="SAME_LOWER",
                                                  padding_mode="CIRCULAR"), (2, 7, 7)),
    "2d_pairs_replicate_nobias": ((2, 2, 3, 3), dict(padding=((2, 0), (1, 1)),
                                                     padding_mode="REPLICATE", use_bias=False),
                                  (2, 6, 5)),
    "3d_valid": ((3, 1, 2, 2), dict(), (1, 4, 5, 3)),
}


def test_grads_equal_equinox_and_flip_is_the_true_convolution():
    theirs = eqx.nn.Conv(2, 2, 3, 3, padding="SAME", key=jax.random.key(0))
    ours = jeqx.Conv(2, 2, 3, 3, padding="SAME", key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6))
    loss = lambda m: jnp.sum(jnp.sin(m(x)))  # noqa: E731
    got, want = eqx.filter_grad(loss)(ours), eqx.filter_grad(loss)(theirs)
    np.testing.assert_allclose(got.weight, want.weight, rtol=1e-5, atol=1e-5)
    flipped = jeqx.Conv(2, 2, 3, 3, padding="SAME", flip=True, key=jax.random.key(0))
    mirrored = eqx.tree_at(lambda m: m.weight, theirs, theirs.weight[..., ::-1, ::-1])
    np.testing.assert_allclose(flipped(x), mirrored(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["Conv", "ConvTranspose"])
def test_a_batched_input_is_refused_naming_vmap(name):
    layer = getattr(jeqx, name)(2, 2, 3, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match=rf"^jaxconv\.interop\.equinox\.{name}: x must have "
                                         rf"rank 3 \(in_channels, 2 spatial dims; unbatched, "
                                         rf"as equinox\.nn\.{name}\), got shape "
                                         r"\(4, 2, 6, 6\); use jax\.vmap"):
        layer(jnp.ones((4, 2, 6, 6)))


TRANSPOSE_CASES = {
    "1d_stride_output_padding_dilation_groups": (
        (1, 4, 6, 3), dict(stride=2, padding=1, output_padding=1, dilation=2, groups=2), (4, 7)),
    "2d_groups": ((2, 4, 6, (3, 2)), dict(stride=2, padding=1, groups=2), (4, 5, 6)),
    "2d_same": ((2, 3, 5, (3, 2)), dict(stride=2, padding="SAME"), (3, 5, 6)),
    "2d_same_lower_circular": ((2, 2, 3, 4), dict(stride=2, padding="SAME_LOWER",
                                                  padding_mode="CIRCULAR"), (2, 5, 5)),
    "2d_same_circular_stride1": ((2, 2, 3, 3), dict(padding="SAME", padding_mode="CIRCULAR"),
                                 (2, 5, 5)),
    # output_padding on VALID: outputs that see only padding
    "2d_valid_output_padding": ((2, 2, 3, 3), dict(stride=3, output_padding=2), (2, 4, 5)),
    "2d_pairs_nobias": ((2, 2, 3, 3), dict(stride=2, padding=((2, 0), (1, 1)), use_bias=False),
                        (2, 4, 5)),
    "3d": ((3, 1, 2, 2), dict(stride=(1, 2, 1)), (1, 3, 4, 3)),
}


LAYERS = {"Conv": (eqx.nn.Conv, jeqx.Conv, CASES),
          "ConvTranspose": (eqx.nn.ConvTranspose, jeqx.ConvTranspose, TRANSPOSE_CASES)}


@pytest.mark.parametrize(("layer", "name"),
                         [(k, n) for k, (*_, cases) in LAYERS.items() for n in cases])
def test_equals_equinox_given_the_same_params(layer, name):
    theirs_cls, ours_cls, cases = LAYERS[layer]
    args, kwargs, x_shape = cases[name]
    theirs = theirs_cls(*args, **kwargs, key=jax.random.key(0))
    ours = ours_cls(*args, **kwargs, key=jax.random.key(0))
    assert isinstance(ours, theirs_cls)
    np.testing.assert_array_equal(ours.weight, theirs.weight)
    assert (ours.bias is None) == (theirs.bias is None)
    x = jax.random.normal(jax.random.key(1), x_shape)
    want = theirs(x)
    assert ours(x).shape == want.shape
    np.testing.assert_allclose(ours(x), want, rtol=1e-5, atol=1e-5)
    batch = jax.random.normal(jax.random.key(2), (3, *x_shape))
    np.testing.assert_allclose(jax.vmap(ours)(batch), jax.vmap(theirs)(batch), rtol=1e-5,
                               atol=1e-5)


def test_conv_transpose_grads_equal_equinox():
    theirs = eqx.nn.ConvTranspose(2, 4, 2, 3, stride=2, padding=1, groups=2,
                                  key=jax.random.key(0))
    ours = jeqx.ConvTranspose(2, 4, 2, 3, stride=2, padding=1, groups=2, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 5, 5))
    loss = lambda m, x: jnp.sum(jnp.sin(m(x)))  # noqa: E731
    got = eqx.filter_grad(loss)(ours, x), jax.grad(loss, argnums=1)(ours, x)
    want = eqx.filter_grad(loss)(theirs, x), jax.grad(loss, argnums=1)(theirs, x)
    np.testing.assert_allclose(got[0].weight, want[0].weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0].bias, want[0].bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
