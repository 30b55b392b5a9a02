"""Tests for jaxconv.teachers: the benchmark's teachers and their data, and the pipeline."""

import collections

import jax
import numpy as np
import pytest

from jaxconv import nn, recovery, teachers


@pytest.fixture(scope="module")
def bench():
    return teachers.benchmark()


def test_the_benchmark_has_every_family_and_at_least_50_teachers(bench):
    assert len(bench) >= 50
    assert len({t.name for t in bench}) == len(bench)
    counts = collections.Counter(t.family for t in bench)
    assert set(counts) == set(teachers.FAMILIES)
    assert counts["bank"] >= 20
    for t in bench:
        assert t.images in teachers.IMAGES
        assert teachers.conv_names(t.model)[-1] == "out"
        widths = teachers.hidden_widths(t)
        assert all(1 <= w <= 8 for w in widths)
        if t.family == "bank":
            assert 2 <= widths[0] <= 8 and len(widths) == 1
            k2 = t.params["out"]["kernel"].shape[0]
            assert k2 in (3, 5)
    assert {len(teachers.hidden_widths(t)) for t in bench if t.family == "deep"} == {2}


def test_bank_teachers_use_unit_norm_bank_filters(bench):
    bank = {n: np.asarray(f) for n, f in teachers.filters.bank().items()}
    for t in bench:
        if t.family in ("bank", "photo", "lines", "stride", "pool", "deep"):
            k = np.asarray(t.params["conv1"]["kernel"])
            assert len(t.filter_names) == k.shape[-1]
            for c, name in enumerate(t.filter_names):
                want = bank[name] / np.linalg.norm(bank[name])
                np.testing.assert_allclose(k[:, :, 0, c], want, rtol=1e-6)


def test_benchmark_is_deterministic(bench):
    again = teachers.benchmark()
    for a, b in zip(bench, again, strict=True):
        assert a.name == b.name
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ["line_crossing", "photo_w2_k3", "lines_w2_k3", "stride_w2_k3",
                                  "pool_max_w2"])
def test_make_data_shapes_and_teacher_outputs(bench, name, key):
    t = {t.name: t for t in bench}[name]
    x, y = teachers.make_data(t, key, 5)
    assert x.shape == (5, t.size, t.size, 1) and x.dtype == np.float32
    assert y.shape == t.model.output_shape(x.shape)
    x2, y2 = teachers.make_data(t, key, 5)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x2))
    assert float(np.std(np.asarray(y))) > 0
    if t.images == "photo":  # standardised photographs: not noise, not constant
        assert 0.05 < float(np.std(np.asarray(x))) < 5


def test_line_crossing_matches_recover_stack_numbers():
    t = teachers.line_crossing()
    w2 = np.asarray(t.params["out"]["kernel"])[..., 0]
    assert w2[:, 1, 0].tolist() == [0.5, 1.0, 0.5] and w2[1, :, 1].tolist() == [0.5, 1.0, 0.5]
    assert float(t.params["out"]["bias"][0]) == -2.0 and t.model.names[-1] == "out_relu"


def test_architecture_and_widen():
    m = teachers.architecture([2, 3], [3, 3, 5], pool="max")
    assert m.names == ("conv1", "relu1", "pool1", "conv2", "relu2", "out")
    w = teachers.widen(m, [8, 12])
    assert [layer.features for layer in w.layers if isinstance(layer, nn.Conv)] == [8, 12, 1]
    with pytest.raises(ValueError, match="len\\(widths\\) \\+ 1 kernels"):
        teachers.architecture([2], [3])
    with pytest.raises(ValueError, match="pool"):
        teachers.architecture([2], [3, 3], pool="min")
    with pytest.raises(ValueError, match="one width per hidden conv layer"):
        teachers.widen(m, [8])


def test_jacobian_rank_counts_the_scale_symmetry(key):
    """At the teacher, the outputs' Jacobian loses one direction per hidden channel (the
    positive scale) and no more: the line -> crossing teacher is locally identifiable."""
    t = teachers.line_crossing()
    x, _ = teachers.make_data(t, key, 16)
    rank, n, s = teachers.jacobian_rank(t.model, t.params, x)
    assert n == 2 * 9 + 2 * 9 + 1
    assert rank == n - 2
    # a channel that is never used adds its whole filter to the null space
    dup = jax.tree.map(np.asarray, t.params)
    dup["out"] = {"kernel": dup["out"]["kernel"].copy(), "bias": dup["out"]["bias"]}
    dup["out"]["kernel"][:, :, 1] = 0.0
    rank0, _, _ = teachers.jacobian_rank(t.model, dup, x)
    assert rank0 == n - 1 - 9  # its 9 filter weights (its scale among them), ch 0's scale
    assert np.all(np.diff(s) <= 0)


def test_score_of_a_teacher_from_the_benchmark_names_a_negated_filter(bench, key):
    t = {t.name: t for t in bench}["bank_w2_k3_s0"]
    p = jax.tree.map(np.asarray, t.params)
    p["conv1"] = {"kernel": -p["conv1"]["kernel"]}
    x, _ = teachers.make_data(t, key, 4)
    s = recovery.score_stack(p, t.params, teacher_model=t.model, x=x)
    assert not s.recovered and s.failure == "negated"


@pytest.mark.slow
def test_recover_finds_the_line_crossing_teacher_from_data_alone(key):
    """The pipeline reads the architecture, x and y only; the score compares with the
    teacher's weights on held-out images."""
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, jax.random.key(1), 16)
    x_test, _ = teachers.make_data(t, jax.random.key(2), 64)
    r = teachers.recover(t.model, x, y, [2], key=key, restarts=4, steps=600,
                         refit_restarts=2, refit_steps=300, polish_steps=200, cosine=0.99)
    assert r.attempts == 1  # reached 1e-6 at once: no second pass
    assert r.restarts == 4 + 2 and r.restart_steps == 4 * 600 + 2 * 300
    assert 1 <= r.polish_steps <= 2 * 200
    assert r.support[0][:2] == [4, 4]  # both detectors found in every expanded restart
    s = recovery.score_stack(r.params, t.params, teacher_model=t.model, x=x_test)
    # the criteria (score_stack's defaults): cosine >= 0.99999, error <= 1e-6
    assert s.recovered and s.min_cosine >= 0.99999 and s.function_error <= 1e-6, s
    assert r.identifiable and r.expected_rank == 37 - 2


def test_recover_runs_another_attempt_only_while_none_reached_good_enough(key):
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, key, 4)
    settings = dict(key=key, restarts=2, steps=5, refit_restarts=1, refit_steps=5,
                    polish_steps=0)
    # an unreachable error (0): every attempt runs, and each one's restarts and steps count
    r = teachers.recover(t.model, x, y, [2], good_enough=0.0, attempts=3, **settings)
    assert r.attempts == 3 and r.restarts == 3 * (2 + 1)
    assert r.restart_steps == 3 * (2 * 5 + 1 * 5)
    # any error is good enough: one attempt, the same result as attempts=1 (the first
    # attempt draws from `key` itself)
    r1 = teachers.recover(t.model, x, y, [2], good_enough=np.inf, attempts=3, **settings)
    r0 = teachers.recover(t.model, x, y, [2], good_enough=np.inf, **settings)
    assert r1.attempts == 1 and r1.restarts == 2 + 1
    assert r1.train_rel_error == r0.train_rel_error
    jax.tree.map(np.testing.assert_array_equal, r1.params, r0.params)
    # more attempts never return a worse student than the first attempt's
    assert r.train_rel_error <= r0.train_rel_error


def test_recover_rejects_no_attempts(key):
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, key, 4)
    with pytest.raises(ValueError, match=r"`attempts` \(=0\) must be >= 1"):
        teachers.recover(t.model, x, y, [2], key=key, attempts=0)


def _smooth_images(key, n=6, size=10, channels=2):
    """Correlated images: white noise summed along both axes (strongly correlated patches)."""
    x = np.cumsum(np.cumsum(np.asarray(jax.random.normal(key, (n, size, size, channels))),
                            axis=1), axis=2)
    return (x / x.std()).astype(np.float32)


def _patches_oracle(x, k, pad):
    """Every k x k patch of x (zero padding ``pad`` on each side), flattened in the order of
    ``kernel.reshape(k * k * C, features)``: rows, columns, channels."""
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = xp.shape
    out = [xp[:, i:i + k, j:j + k, :].reshape(n, -1)
           for i in range(h - k + 1) for j in range(w - k + 1)]
    return np.concatenate(out, axis=0)


@pytest.mark.parametrize("padding,pad", [("VALID", 0), ("SAME", 1)])
def test_whitener_whitens_the_patches_the_layer_sees(key, padding, pad):
    x = _smooth_images(key)
    p = _patches_oracle(x, 3, pad)
    c = p.T @ p / len(p)
    e = np.linalg.eigvalsh(c)
    assert e[-1] / e[0] > 100  # the hazard: these patches are badly conditioned
    m = teachers.whitener(nn.Conv(5, 3, padding=padding), x)
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    # (C / mean eigenvalue)^(-1/2): M C M is the mean eigenvalue times the identity
    np.testing.assert_allclose(m @ c @ m, e.mean() * np.eye(len(c)), atol=1e-6)


def test_whitener_rejects_grouped_convs(key):
    with pytest.raises(ValueError, match="whitener: needs an nn.Conv with groups=1"):
        teachers.whitener(nn.Conv(4, 3, groups=2), _smooth_images(key))


def test_whitened_adam_trains_the_same_model_and_descends_faster_on_correlated_images(key):
    # a linear conv teacher on correlated images: its loss is a quadratic whose Hessian is the
    # patches' second moment, so plain Adam crawls along the small eigenvectors; the same
    # model with its kernel trained as v (kernel = M v), from the same start, does not
    k1, k2, k3 = jax.random.split(key, 3)
    x = _smooth_images(k1, n=8, size=12, channels=1)
    model = nn.Stack([nn.Conv(3, 3, padding="SAME")])
    y = model.apply(model.init(k2, x.shape), x)
    p0 = teachers._init(model, k3, x.shape, 2)
    name = teachers.conv_names(model)[0]
    m = teachers.whitener(model.layers[0], x)
    # no descent (lr 0): the kernels come back as they went in
    same = teachers._fit(model, p0, x, y, key=k3, steps=1, restarts=2, lr=0.0,
                         whiten=(name, m))
    np.testing.assert_allclose(np.asarray(same.params[name]["kernel"]),
                               np.asarray(p0[name]["kernel"]), rtol=1e-5, atol=1e-6)
    plain = teachers._fit(model, p0, x, y, key=k3, steps=150, restarts=2)
    white = teachers._fit(model, p0, x, y, key=k3, steps=150, restarts=2, whiten=(name, m))
    err = lambda r: teachers._rel_errors(model, r.params, x, y)
    assert np.all(err(white) < 0.1 * err(plain)), (err(white), err(plain))


def test_recover_rejects_a_wrong_number_of_widths(key):
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, key, 4)
    with pytest.raises(ValueError, match="one width per hidden conv layer"):
        teachers.recover(t.model, x, y, [2, 2], key=key)


def _rel_error(model, params, x, y):
    """The oracle: numpy's norm of the outputs' difference, in float64."""
    out = np.asarray(model.apply(params, x), np.float64)
    y = np.asarray(y, np.float64)
    return float(np.linalg.norm(out - y) / np.linalg.norm(y))


def test_polish_returns_a_nearby_teacher_to_float_precision(key):
    """From the teacher's weights moved by 1e-2 (relative), Levenberg-Marquardt comes back
    to the teacher itself: the line -> crossing stack is identifiable up to scale, and the
    perturbation keeps every scale at 1 to first order only, so compare after scoring."""
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, jax.random.key(1), 16)
    rng = np.random.default_rng(0)
    moved = jax.tree.map(lambda a: np.asarray(a) * (1 + 1e-2 * rng.normal(size=a.shape)),
                         t.params)
    before = _rel_error(t.model, moved, x, y)
    assert before > 1e-3
    p = teachers.polish(t.model, jax.tree.map(lambda a: np.float32(a), moved), x, y, steps=30)
    assert 1 <= p.steps <= 30
    # the same error evaluated two ways in float32: near 1e-7 they differ in rounding only
    assert p.rel_error == pytest.approx(_rel_error(t.model, p.params, x, y), rel=1e-3,
                                        abs=2e-8)
    assert p.rel_error <= 1e-6
    x_test, _ = teachers.make_data(t, jax.random.key(2), 64)
    s = recovery.score_stack(p.params, t.params, teacher_model=t.model, x=x_test)
    assert s.recovered and s.max_param_error < 1e-5, s
    assert jax.tree.structure(p.params) == jax.tree.structure(t.params)
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(p.params))


def test_polish_refuses_bad_arguments(key):
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, key, 4)
    with pytest.raises(ValueError, match=r"polish: `steps` \(=-1\) must be >= 0"):
        teachers.polish(t.model, t.params, x, y, steps=-1)
    with pytest.raises(ValueError, match=r"polish: `y` has 128 values, the model gives 256"):
        teachers.polish(t.model, t.params, x, y[:2], steps=1)


def test_plain_restarts_counts_and_reports_each_restart(key):
    t = teachers.line_crossing()
    x, y = teachers.make_data(t, jax.random.key(1), 8)
    r = teachers.plain_restarts(t.model, x, y, key=key, restarts=3, steps=20, polish_steps=2)
    assert r.restart_steps == 3 * 20 and 0 <= r.polish_steps <= 3 * 2
    assert r.params["conv1"]["kernel"].shape == (3, 3, 3, 1, 2)
    want = [_rel_error(t.model, jax.tree.map(lambda a, i=i: a[i], r.params), x, y)
            for i in range(3)]
    np.testing.assert_allclose(r.train_rel_errors, want, rtol=1e-3)
    assert len(set(np.round(want, 6))) == 3  # three different random starts
    with pytest.raises(ValueError, match=r"plain_restarts: `restarts` \(=0\) must be >= 1"):
        teachers.plain_restarts(t.model, x, y, key=key, restarts=0)


def _bank_unit(name):
    f = np.asarray(teachers.filters.bank()[name], np.float64)
    return f / np.linalg.norm(f)


def _prune_case(key):
    """A 3-filter teacher (laplacian, sobel_x, vertical_line) and an 8-channel student
    holding laplacian only as a negative, sobel_x and vertical_line at other scales, and
    distractors: sharpen (its negative has cosine 0.9965 with laplacian: clustering at 0.99
    would merge the two), prewitt_x and scharr_x (cosine ~0.98 with sobel_x), two random
    filters."""
    rng = np.random.default_rng(0)
    names = ("laplacian", "sobel_x", "vertical_line")
    model = teachers.architecture([3], [3, 3])
    w1 = np.stack([_bank_unit(n) for n in names], axis=-1)[:, :, None, :]
    t = teachers._teacher("case", "bank", model, [w1, rng.normal(size=(3, 3, 3, 1)) / 3],
                          [None, [0.1]], images="noise", size=12)
    cols = [_bank_unit("sharpen"), -2.0 * _bank_unit("laplacian"), _bank_unit("prewitt_x"),
            3.0 * _bank_unit("sobel_x"), rng.normal(size=(3, 3)), 0.5 * _bank_unit(
                "vertical_line"), _bank_unit("scharr_x"), rng.normal(size=(3, 3))]
    wide = teachers.widen(model, [8])
    params = {"conv1": {"kernel": np.stack(cols, axis=-1)[:, :, None, :].astype(np.float32)},
              "out": {"kernel": rng.normal(size=(3, 3, 8, 1)).astype(np.float32),
                      "bias": np.zeros(1, np.float32)}}
    x, y = teachers.make_data(t, key, 16)
    return t, wide, params, x, y


def test_prune_by_fit_picks_the_teacher_filters_among_negatives_and_distractors(key):
    t, wide, params, x, y = _prune_case(key)
    pruned = teachers.prune_by_fit(wide, params, x, y, 3)
    assert pruned["conv1"]["kernel"].shape == (3, 3, 1, 3)
    assert pruned["out"]["kernel"].shape == (3, 3, 3, 1)
    x_test, _ = teachers.make_data(t, jax.random.fold_in(key, 1), 64)
    s = recovery.score_stack(pruned, t.params, teacher_model=t.model, x=x_test)
    # the teacher's exact filters (laplacian from its negative, not -sharpen), and the readout
    # by least squares: the teacher's function to float32 rounding
    assert s.recovered and s.min_cosine >= 0.99999 and s.function_error <= 1e-6, s


def test_prune_by_fit_cannot_recover_a_filter_the_student_lacks(key):
    t, wide, params, x, y = _prune_case(key)
    params["conv1"]["kernel"][..., 5] = 0.0  # vertical_line gone: the zero filter is skipped
    pruned = teachers.prune_by_fit(wide, params, x, y, 3)
    s = recovery.score_stack(pruned, t.params, teacher_model=t.model, x=x)
    assert not s.recovered and s.function_error > 1e-3


def test_prune_by_fit_rejects_bad_models_and_widths(key):
    t, wide, params, x, y = _prune_case(key)
    with pytest.raises(ValueError, match=r"prune_by_fit: `width` \(=0\) must be between 1 "
                                         r"and twice the nonzero filters of layer 'conv1' \(16\)"):
        teachers.prune_by_fit(wide, params, x, y, 0)
    with pytest.raises(ValueError, match=r"`width` \(=17\) must be between"):
        teachers.prune_by_fit(wide, params, x, y, 17)
    lc = teachers.line_crossing()  # ends with a ReLU: not affine in the readout's weights
    with pytest.raises(ValueError, match=r"prune_by_fit: needs a hidden conv layer and a "
                                         r"readout conv as the model's last layer"):
        teachers.prune_by_fit(lc.model, lc.params, x, lc.model.apply(lc.params, x), 2)


def test_recover_selection_by_fit_adds_polish_and_restarts_only_past_the_bound(key):
    t = {t.name: t for t in teachers.benchmark()}["bank_w2_k3_s0"]
    settings = dict(key=key, restarts=2, steps=5, refit_restarts=1, refit_steps=5,
                    polish_steps=2, select_steps=2, prune_within=np.inf)
    # 16 images: 1,024 outputs; the 4x student (8 channels) has 8 * 9 + 8 * 9 + 1 = 145
    # parameters, under half the outputs: the selection polishes the expanded students
    x, y = teachers.make_data(t, key, 16)
    r0 = teachers.recover(t.model, x, y, [2], good_enough=0.0, select=0, **settings)
    r1 = teachers.recover(t.model, x, y, [2], good_enough=0.0, select=2, **settings)
    assert (r1.restarts, r1.restart_steps) == (r0.restarts, r0.restart_steps)
    assert r1.polish_steps > r0.polish_steps and not r0.by_fit
    assert r1.train_rel_error <= r0.train_rel_error  # the best of more students
    # 4 images: 256 outputs, 145 > 128: it trains 2 students of 7 channels (127 parameters)
    x, y = x[:4], y[:4]
    r0 = teachers.recover(t.model, x, y, [2], good_enough=0.0, select=0, **settings)
    r1 = teachers.recover(t.model, x, y, [2], good_enough=0.0, select=2, **settings)
    assert (r1.restarts, r1.restart_steps) == (r0.restarts + 2, r0.restart_steps + 2 * 5)
    assert teachers._n_params(teachers.widen(t.model, [7]), x.shape) == 127
    # reached at once: the selection does not run
    r2 = teachers.recover(t.model, x, y, [2], good_enough=np.inf, select=2, **settings)
    r3 = teachers.recover(t.model, x, y, [2], good_enough=np.inf, select=0, **settings)
    assert not r2.by_fit and r2.polish_steps == r3.polish_steps
    jax.tree.map(np.testing.assert_array_equal, r2.params, r3.params)
    with pytest.raises(ValueError, match=r"recover: `select` \(=-1\) must be >= 0"):
        teachers.recover(t.model, x, y, [2], select=-1, **settings)


def test_recover_selection_prunes_only_students_whose_polish_reached_prune_within(
        key, monkeypatch):
    """An expanded student whose polish stays above ``prune_within`` (default
    ``sqrt(good_enough)``) is not pruned nor polished again; its polish steps still count."""
    t = {t.name: t for t in teachers.benchmark()}["bank_w2_k3_s0"]
    x, y = teachers.make_data(t, key, 16)
    settings = dict(key=key, restarts=2, steps=5, refit_restarts=1, refit_steps=5,
                    polish_steps=2, select_steps=2)
    calls = []
    prune = teachers.prune_by_fit
    monkeypatch.setattr(teachers, "prune_by_fit", lambda *a: calls.append(1) or prune(*a))
    # 5 Adam steps leave the students far above 1e-3 = sqrt(1e-6): nothing is pruned
    r = teachers.recover(t.model, x, y, [2], select=2, **settings)
    assert not calls and not r.by_fit and r.train_rel_error > 1e-3
    r0 = teachers.recover(t.model, x, y, [2], select=0, **settings)
    jax.tree.map(np.testing.assert_array_equal, r.params, r0.params)
    assert r.polish_steps == r0.polish_steps + 2 * 2  # both grown students' polish
    # an explicit bound both students reach: both are pruned (none reaches good_enough)
    r = teachers.recover(t.model, x, y, [2], select=2, prune_within=1.0, **settings)
    assert len(calls) == 2 and r.polish_steps > r0.polish_steps + 2 * 2
    with pytest.raises(ValueError, match=r"recover: `prune_within` \(=-1.0\) must be >= 0"):
        teachers.recover(t.model, x, y, [2], prune_within=-1.0, **settings)
    with pytest.raises(ValueError, match=r"recover: `prune_within` \(=nan\) must be >= 0"):
        teachers.recover(t.model, x, y, [2], prune_within=np.nan, **settings)


@pytest.mark.slow
def test_recover_selection_by_fit_recovers_a_teacher_the_refit_misses():
    """bank_w5_k3_s1 with the benchmark's keys and settings: the refit students stop near
    1e-2 (the clusters come from inexact filters); the selection recovers it exactly."""
    import zlib

    t = {t.name: t for t in teachers.benchmark()}["bank_w5_k3_s1"]
    base = jax.random.fold_in(jax.random.key(0), zlib.crc32(t.name.encode()))
    k_train, k_test, k_rec, _ = jax.random.split(base, 4)
    x, y = teachers.make_data(t, k_train, 16)
    x_test, _ = teachers.make_data(t, k_test, 64)
    settings = dict(key=k_rec, restarts=8, steps=600, refit_restarts=4, refit_steps=300,
                    polish_steps=12)
    r = teachers.recover(t.model, x, y, [5], **settings)
    assert r.by_fit and r.attempts == 1
    s = recovery.score_stack(r.params, t.params, teacher_model=t.model, x=x_test)
    assert s.recovered and s.min_cosine >= 0.99999 and s.function_error <= 1e-6, s
    # without the selection the same pass does not recover it
    r0 = teachers.recover(t.model, x, y, [5], select=0, **settings)
    s0 = recovery.score_stack(r0.params, t.params, teacher_model=t.model, x=x_test)
    assert not s0.recovered and r0.train_rel_error > 1e-6


@pytest.mark.parametrize("depth", [1, 2])
def test_jacobian_image_by_image_equals_jacfwd_of_the_batch(key, depth):
    """``_outputs_and_jacobian`` pulls each image's outputs back through that image alone;
    the oracle is ``jacfwd`` of the whole batch's flat outputs (a pool and a bias-free layer
    included)."""
    widths = [3] * depth
    model = teachers.architecture(widths, [3] * depth + [2], pool="max" if depth == 1 else None)
    x = jax.random.normal(key, (5, 11, 11, 1))
    params = model.init(jax.random.fold_in(key, 1), x.shape)
    with jax.default_matmul_precision("highest"):
        out, jac = teachers._outputs_and_jacobian(model, params, x)
        ref = jax.jacfwd(lambda p: model.apply(p, x).ravel())(params)
    np.testing.assert_allclose(out, model.apply(params, x).ravel(), rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(jac), jax.tree.leaves(ref), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_recover_selection_does_not_depend_on_the_number_of_attempts(key):
    """The selection by fit of a pass draws from that pass's key: a run allowed 3 passes
    that stops after the first returns exactly the 1-pass run's result."""
    t = {t.name: t for t in teachers.benchmark()}["bank_w2_k3_s0"]
    x, y = teachers.make_data(t, key, 4)  # 256 outputs: the selection trains its students
    settings = dict(key=key, restarts=2, steps=5, refit_restarts=1, refit_steps=5,
                    polish_steps=2, select=1, select_steps=2, prune_within=np.inf)
    r1 = teachers.recover(t.model, x, y, [2], good_enough=0.0, attempts=1, **settings)
    assert r1.by_fit  # the selection's student is the best here: the hazard is exercised
    r3 = teachers.recover(t.model, x, y, [2], good_enough=r1.train_rel_error, attempts=3,
                          **settings)
    assert r3.attempts == 1 and r3.train_rel_error == r1.train_rel_error
    jax.tree.map(np.testing.assert_array_equal, r3.params, r1.params)


def test_n_images_bounds_the_expanded_students_parameters_per_output(bench):
    ts = {t.name: t for t in bench}
    for name in ("bank_w2_k3_s0", "bank_w8_k5_s0", "deep_w4x4"):
        t = ts[name]
        n = teachers.n_images(t)
        wide = teachers.widen(t.model, [4 * w for w in teachers.hidden_widths(t)])
        per_image = t.model.apply(t.params, np.zeros((1, t.size, t.size, 1), np.float32)).size
        params = teachers._n_params(wide, (1, t.size, t.size, 1))
        assert n >= 16 and params <= 0.5 * n * per_image
        assert n == 16 or params > 0.5 * (n - 1) * per_image  # the fewest such
    assert teachers.n_images(ts["bank_w8_k5_s0"]) == 61  # 1,089 parameters, 36 outputs each
    assert teachers.n_images(ts["bank_w8_k5_s0"], factor=1, minimum=3) == 16  # 281 params
    assert teachers.n_images(ts["bank_w8_k5_s0"], minimum=3, params_per_output=100) == 3
    with pytest.raises(ValueError, match="n_images: needs factor >= 1"):
        teachers.n_images(ts["bank_w8_k5_s0"], factor=0)
    with pytest.raises(ValueError, match="params_per_output > 0"):
        teachers.n_images(ts["bank_w8_k5_s0"], params_per_output=0.0)


def test_pipeline_helpers_compile_once_per_architecture(key):
    """A second call with the same architecture and shapes reuses the executable (a
    ``jax.jit`` of a lambda made inside the call compiled anew every time)."""
    t = {t.name: t for t in teachers.benchmark()}["bank_w2_k3_s0"]
    model = teachers.widen(t.model, [5])
    x, y = teachers.make_data(t, key, 4)
    def calls():
        p = teachers._init(model, key, x.shape, 2)
        teachers._rel_errors(model, p, x, y)
        teachers._activity(model, p, x, "conv1")
        teachers.make_data(t, key, 4)
        recovery.score_stack(teachers._take(p, 0), t.params, teacher_model=t.model,
                             student_model=model, x=x)

    compiles = []

    def listen(event, secs, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        calls()
        assert compiles  # the listener sees this jaxlib's compilations: the check can fail
        compiles.clear()
        calls()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
