"""jaxconv.interop.from_torch / to_torch against torch itself, in float64."""

import jax
import numpy as np
import pytest

from jaxconv import interop, nn

torch = pytest.importorskip("torch")

CASES = {
    "conv1d": (lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
               "conv", lambda: nn.Conv(6, 3, stride=2, padding=1, dilation=2, groups=2),
               (2, 4, 11)),
    "conv2d": (lambda: torch.nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(1, 0)),
               "conv", lambda: nn.Conv(5, (3, 2), stride=(1, 2), padding=(1, 0)), (2, 3, 7, 8)),
    "conv3d_nobias": (lambda: torch.nn.Conv3d(2, 3, 2, bias=False), "conv",
                      lambda: nn.Conv(3, 2, use_bias=False), (1, 2, 4, 5, 3)),
    "conv_transpose1d": (
        lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                         groups=2),
        "conv_transpose",
        lambda: nn.ConvTranspose(6, 3, stride=2, padding=1, output_padding=1, groups=2),
        (2, 4, 5)),
    "conv_transpose2d": (
        lambda: torch.nn.ConvTranspose2d(3, 2, (2, 3), stride=2, dilation=(1, 2)),
        "conv_transpose", lambda: nn.ConvTranspose(2, (2, 3), stride=2, dilation=(1, 2)),
        (2, 3, 4, 5)),
    "conv_transpose3d": (lambda: torch.nn.ConvTranspose3d(2, 3, 2, stride=2), "conv_transpose",
                         lambda: nn.ConvTranspose(3, 2, stride=2), (1, 2, 3, 2, 3)),
    "linear": (lambda: torch.nn.Linear(7, 4), "linear", lambda: nn.Dense(4), (3, 7)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("source", ["module", "state_dict"])
def test_imported_params_give_torchs_outputs_in_float64(name, source):
    make_torch, kind, make_layer, x_shape = CASES[name]
    torch.manual_seed(0)
    module = make_torch().double()
    x = torch.randn(*x_shape, dtype=torch.float64)
    with torch.no_grad():
        want = module(x).numpy()
    with jax.enable_x64(True):
        params = (interop.from_torch(module) if source == "module"
                  else interop.from_torch(module.state_dict(), kind=kind))
        assert all(v.dtype == np.float64 for v in params.values())
        layer = make_layer()
        x_last = np.moveaxis(x.numpy(), 1, -1) if kind != "linear" else x.numpy()
        got = np.asarray(layer.apply(params, x_last))
        # init makes params of exactly these shapes: the import is what the layer expects
        init_shapes = jax.tree.map(np.shape, layer.init(jax.random.key(0), x_last.shape))
        assert jax.tree.map(np.shape, params) == init_shapes
    if kind != "linear":
        got = np.moveaxis(got, -1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_is_exact(name):
    make_torch, kind, _, _ = CASES[name]
    module = make_torch().double()
    with jax.enable_x64(True):
        state = interop.to_torch(interop.from_torch(module), kind=kind)
    assert list(state) == list(module.state_dict())
    for key, value in module.state_dict().items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value)
    other = make_torch().double()
    with jax.enable_x64(True):
        loaded = interop.to_torch(interop.from_torch(module), kind=kind, module=other)
    assert loaded is other and torch.equal(other.weight, module.weight)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: interop.from_torch({"weight": np.ones((2, 3, 3, 3))}), ValueError,
         r"^from_torch: a state dict does not say which layer it is from; pass kind= one of "
         r"'conv', 'conv_transpose', 'linear'\.$"),
        (lambda: interop.from_torch(torch.nn.ReLU()), TypeError,
         r"^from_torch: layer must be a torch Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear "
         r"module or its state_dict\(\), got ReLU\.$"),
        (lambda: interop.from_torch(torch.nn.Linear(2, 3), kind="conv"), ValueError,
         r"^from_torch: kind='conv' but the module is a Linear \('linear'\)\.$"),
        (lambda: interop.from_torch({"weight": np.ones((2, 3))}, kind="convolution"), ValueError,
         r"^from_torch: unknown kind 'convolution'; expected one of 'conv', 'conv_transpose', "
         r"'linear'\.$"),
        (lambda: interop.from_torch({"w": np.ones((2, 3))}, kind="linear"), ValueError,
         r"^from_torch: a linear state dict has 'weight' and optionally 'bias', got keys "
         r"\['w'\]\.$"),
        (lambda: interop.from_torch({"weight": np.ones((2, 3))}, kind="conv"), ValueError,
         r"^from_torch: a conv weight has rank 3 to 5, got shape \(2, 3\)\.$"),
        (lambda: interop.from_torch({"weight": np.ones((2, 3), int)}, kind="linear"), TypeError,
         r"^from_torch: weight must hold floats, got dtype int64\.$"),
        (lambda: interop.to_torch({"kernel": np.ones((3, 3, 1, 2))}, kind="linear"), ValueError,
         r"^to_torch: a linear kernel has rank 2, got shape \(3, 3, 1, 2\)\.$"),
        (lambda: interop.to_torch({"bias": np.ones(2)}, kind="conv"), ValueError,
         r"^to_torch: params must be a layer's params with a 'kernel', got dict\.$"),
    ],
    ids=["state_dict_no_kind", "module_kind", "kind_mismatch", "kind_typo", "keys",
         "rank", "int_weight", "to_rank", "to_no_kernel"],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
