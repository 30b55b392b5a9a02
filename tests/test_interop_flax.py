"""jaxconv.interop.flax_nnx.Conv against flax.nnx.Conv: same params, same outputs, same losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")
flax_nnx = pytest.importorskip("jaxconv.interop.flax_nnx")

CASES = {
    "2d_same_s2": ((3, 4, (3, 3)), dict(strides=2, padding="SAME"), (2, 9, 8, 3)),
    "2d_valid_dil_groups": ((4, 6, (3, 2)), dict(kernel_dilation=(2, 1), feature_group_count=2,
                                                 padding="VALID"), (2, 9, 8, 4)),
    "2d_pairs_nobias": ((2, 3, (3, 3)), dict(padding=((1, 0), (2, 1)), use_bias=False),
                        (1, 6, 7, 2)),
    "2d_circular": ((2, 3, (3, 3)), dict(padding="CIRCULAR"), (2, 6, 6, 2)),
    "1d_causal": ((2, 3, 4), dict(padding="CAUSAL", kernel_dilation=2), (2, 12, 2)),
    "3d_int_padding": ((1, 2, (2, 2, 2)), dict(padding=1, strides=(1, 2, 1)), (1, 4, 5, 3, 1)),
    "unbatched": ((2, 3, (3, 3)), dict(padding="SAME"), (6, 6, 2)),
    "two_batch_dims": ((2, 3, (3, 3)), dict(padding="SAME"), (2, 3, 6, 6, 2)),
}


def test_reflect_pad_mode_equals_flax_reflect_padding():
    theirs = nnx.Conv(2, 3, (3, 5), padding="REFLECT", rngs=nnx.Rngs(0))
    ours = flax_nnx.Conv(2, 3, (3, 5), padding="SAME", pad_mode="reflect", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 7, 8, 2))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


class _Model(nnx.Module):
    def __init__(self, conv, rngs):
        self.c1 = conv(1, 4, (3, 3), padding="SAME", rngs=rngs)
        self.c2 = conv(4, 1, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.c2(jax.nn.relu(self.c1(x)))


@pytest.mark.slow
def test_an_nnx_model_trains_to_the_same_losses():
    x = jax.random.normal(jax.random.key(1), (8, 10, 10, 1))
    target = jnp.roll(x, 1, axis=1)

    def losses(conv):
        model = _Model(conv, nnx.Rngs(0))
        opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

        @nnx.jit
        def step(model, opt):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
            opt.update(model, grads)
            return loss

        return [float(step(model, opt)) for _ in range(5)]

    np.testing.assert_allclose(losses(flax_nnx.Conv), losses(nnx.Conv), rtol=1e-4)


def test_what_jaxconv_cannot_do_is_refused():
    layer = flax_nnx.Conv(1, 1, 3, input_dilation=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^jaxconv\.interop\.flax_nnx\.Conv: input_dilation="
                                         r"\(2,\) is not supported by jaxconv\.conv"):
        layer(jnp.ones((1, 5, 5, 1)))
    with pytest.raises(TypeError, match=r"^jaxconv\.interop\.flax_nnx\.Conv: "
                                        r"conv_general_dilated is jaxconv's here"):
        flax_nnx.Conv(1, 1, 3, conv_general_dilated=jax.lax.conv_general_dilated,
                      rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^conv: unknown pad_mode 'mirror'"):
        flax_nnx.Conv(1, 1, 3, padding="SAME", pad_mode="mirror", rngs=nnx.Rngs(0))(
            jnp.ones((1, 5, 5, 1)))


TRANSPOSE_CASES = {
    "2d_s2_same": ((3, 4, (3, 3)), dict(strides=2, padding="SAME"), (2, 5, 6, 3)),
    "2d_valid_transpose_kernel": ((3, 4, (3, 2)), dict(strides=(2, 1), padding="VALID",
                                                       transpose_kernel=True), (2, 5, 6, 3)),
    # pads past k - 1 (outputs that see only padding) and a dilated kernel
    "2d_pairs_dilated": ((2, 3, (3, 3)), dict(strides=2, padding=((1, 4), (0, 2)),
                                              kernel_dilation=(2, 1)), (1, 4, 5, 2)),
    "2d_negative_pairs": ((2, 3, (3, 3)), dict(strides=2, padding=((-1, 0), (0, -1))),
                          (1, 4, 5, 2)),
    "2d_circular": ((2, 3, (4, 4)), dict(strides=2, padding="CIRCULAR"), (2, 5, 5, 2)),
    "2d_circular_transpose_kernel": ((2, 3, (3, 3)), dict(strides=2, padding="CIRCULAR",
                                                          transpose_kernel=True), (2, 5, 5, 2)),
    "1d_int_padding": ((2, 3, 5), dict(strides=3, padding=2), (2, 7, 2)),
    "3d_same_nobias": ((1, 2, (2, 3, 2)), dict(strides=(1, 2, 2), padding="SAME",
                                               use_bias=False), (1, 3, 4, 3, 1)),
    "unbatched": ((2, 3, (3, 3)), dict(strides=2), (5, 5, 2)),
    "two_batch_dims": ((2, 3, (3, 3)), dict(strides=2), (2, 3, 5, 5, 2)),
    "mask": ((2, 3, (3, 3)), dict(strides=2, mask=jnp.tril(jnp.ones((3, 3, 2, 3)))),
             (2, 5, 5, 2)),
}


LAYERS = {"Conv": (nnx.Conv, flax_nnx.Conv, CASES),
          "ConvTranspose": (nnx.ConvTranspose, flax_nnx.ConvTranspose, TRANSPOSE_CASES)}


@pytest.mark.parametrize(("layer", "name"),
                         [(k, n) for k, (*_, cases) in LAYERS.items() for n in cases])
def test_equals_flax_nnx_given_the_same_params(layer, name):
    theirs_cls, ours_cls, cases = LAYERS[layer]
    args, kwargs, x_shape = cases[name]
    theirs = theirs_cls(*args, **kwargs, rngs=nnx.Rngs(0))
    ours = ours_cls(*args, **kwargs, rngs=nnx.Rngs(0))
    assert isinstance(ours, theirs_cls)
    want_state, got_state = nnx.state(theirs, nnx.Param), nnx.state(ours, nnx.Param)
    assert jax.tree.map(jnp.shape, got_state) == jax.tree.map(jnp.shape, want_state)
    for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state), strict=True):
        np.testing.assert_array_equal(a, b)  # same names, layouts and initialisers
    x = jax.random.normal(jax.random.key(1), x_shape)
    want = theirs(x)
    assert ours(x).shape == want.shape
    np.testing.assert_allclose(ours(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose_grads_equal_flax_nnx(transpose_kernel):
    kwargs = dict(strides=2, padding="SAME", transpose_kernel=transpose_kernel)
    theirs = nnx.ConvTranspose(3, 2, (3, 3), **kwargs, rngs=nnx.Rngs(0))
    ours = flax_nnx.ConvTranspose(3, 2, (3, 3), **kwargs, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3))

    def grads(model):
        return nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x))), argnums=(0, 1))(model, x)

    (gm_ours, gx_ours), (gm_theirs, gx_theirs) = grads(ours), grads(theirs)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_ours, gx_theirs, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(nnx.state(gm_ours, nnx.Param)),
                    jax.tree.leaves(nnx.state(gm_theirs, nnx.Param)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv_transpose_refuses_what_it_cannot_do():
    op = r"^jaxconv\.interop\.flax_nnx\.ConvTranspose: "
    with pytest.raises(ValueError, match=op + r"preferred_element_type=.*float32.* is not "
                                              r"supported by jaxconv\.conv_transpose"):
        flax_nnx.ConvTranspose(1, 1, 3, preferred_element_type=jnp.float32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=op + r"padding 'CAUSAL' is not one of 'SAME', "
                                              r"'VALID', 'CIRCULAR' or explicit pads"):
        flax_nnx.ConvTranspose(1, 1, 3, padding="CAUSAL", rngs=nnx.Rngs(0))(
            jnp.ones((1, 5, 1)))
    layer = flax_nnx.ConvTranspose(2, 3, (3, 3), mask=jnp.ones((3, 3, 2, 3)), rngs=nnx.Rngs(0))
    layer.mask = jnp.ones((2, 2, 2, 3))
    with pytest.raises(ValueError, match=op + r"mask must have the kernel's shape \(3, 3, 2, 3\), "
                                              r"got \(2, 2, 2, 3\)"):
        layer(jnp.ones((1, 4, 4, 2)))
