"""Runs every experiment with ``--quick`` (in-process, as a notebook would) and checks its
metrics.json and PNG figures; ``recover_stack --devices 2`` runs in a subprocess."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import matplotlib.image
import numpy as np
import pytest

from jaxconv import _tasks, data, filters
from jaxconv._experiment import run_script

pytestmark = pytest.mark.slow

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(name, out, *extra):
    returned = run_script(EXPERIMENTS / f"{name}.py",
                          ["--quick", "--out", str(out), "--seed", "0", *extra])
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["steps"] == returned["steps"]
    return metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each experiment run once for the whole module: name -> (out dir, metrics)."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            cache[name] = (out, _run(name, out))
        return cache[name]

    return get


# --- recover_cross ---------------------------------------------------------------------


def test_recover_cross_recovers_every_noiseless_filter(runs):
    _, m = runs("recover_cross")
    assert set(m["filters"]) == {"cross", "vertical_line", "horizontal_line"}
    for name, f in m["filters"].items():
        assert f["max_abs_error"] <= 1e-4, name
        assert f["cosine"] >= 0.9999, name


def test_recover_cross_error_grows_with_noise(runs):
    _, m = runs("recover_cross")
    error = {n["snr_db"]: n["max_abs_error"] for n in m["noise"]}
    assert error[10.0] > error[40.0]
    assert error[40.0] > max(f["max_abs_error"] for f in m["filters"].values())


# --- recover_stack ---------------------------------------------------------------------


def test_recover_stack_reports_a_consistent_success_rate(runs):
    _, m = runs("recover_stack")
    r = m["n_restarts"]
    assert 0.0 <= m["success_rate"] <= 1.0
    assert len(m["held_out_rel_error"]) == len(m["min_cosine"]) == len(m["succeeded"]) == r
    criterion = m["success_criterion"]
    expected = [c >= criterion["min_cosine"] and e <= criterion["max_rel_error"]
                for c, e in zip(m["min_cosine"], m["held_out_rel_error"], strict=True)]
    assert m["succeeded"] == expected
    assert m["success_rate"] == pytest.approx(sum(expected) / r)
    assert m["n_successes"] == sum(expected)
    assert sum(m["outcomes"].values()) == r and m["outcomes"]["recovered"] == sum(expected)
    assert m["best_restart"] == int(np.argmin(m["held_out_rel_error"]))
    assert m["wall_s"] > 0 and m["compile_s"] > 0 and m["steps_per_s"] > 0
    # the same-architecture student is reported beside the wide one, scored the same way
    same = m["students"]["same_architecture"]
    assert same["width"] == 2 and m["students"]["wide"]["width"] == m["width"] > 2
    assert m["same_architecture_success_rate"] == same["success_rate"]
    assert sum(same["outcomes"].values()) == same["n_restarts"] == r
    for row in same["restarts"] + m["students"]["wide"]["restarts"]:
        kinds = row["channel_kinds"]
        assert kinds.count("matched") == 2 and set(kinds) <= {"matched", "dead", "redundant",
                                                              "other"}
        assert row["succeeded"] == (row["outcome"] == "recovered")


def test_recover_stack_asks_for_full_float32_in_every_conv_and_dot():
    """TF32 would hide a 1e-6 recovery: the lowered training step carries HIGHEST on every
    convolution and dot, whichever lowering the convs take (CPU's shift-and-add, GPU's lax)."""
    import re

    x = data.noise_images(jax.random.key(0), 4, 12)[..., None]
    y = _tasks.TEACHER.apply(_tasks.teacher_params(), x)
    for algorithm in ("auto", "xla"):
        text = _tasks.lowered_step_text(_tasks.student(4, algorithm=algorithm), x, y)
        ops = re.findall(r"stablehlo\.(?:convolution|dot_general)\b.*", text)
        assert ops, algorithm
        for op in ops:
            # dot_general prints `precision = [HIGHEST, HIGHEST]`, convolution
            # `precision_config = [#stablehlo<precision HIGHEST>, ...]`
            assert op.count("HIGHEST") == 2 and "DEFAULT" not in op, (algorithm, op[-300:])


def test_recover_stack_map_has_a_cell_per_setting(runs):
    _, m = runs("recover_stack_map")
    cells = m["cells"]
    assert m["n_cells"] == len(cells) >= 3
    keys = {(c["width"], c["kernel2"], c["n_images"]) for c in cells}
    assert len(keys) == len(cells)
    for c in cells:
        assert sum(c["outcomes"].values()) == c["n_restarts"] == m["restarts"]
        assert c["success_rate"] == pytest.approx(c["outcomes"]["recovered"] / c["n_restarts"])
    assert m["map_s"] > 0 and set(m["figures"]) == {"map_width_kernel.png", "map_images.png"}


def test_recover_stack_devices_flag_needs_the_devices_before_jax_starts(tmp_path):
    if jax.device_count() >= 2:
        pytest.skip("this process already has several devices")
    with pytest.raises(RuntimeError, match=r"--devices 2 needs 2 devices.*XLA_FLAGS"):
        run_script(EXPERIMENTS / "recover_stack.py",
                   ["--quick", "--devices", "2", "--out", str(tmp_path)])


def test_recover_stack_runs_on_two_devices(tmp_path):
    # XLA reads the device count when jax is imported, so this needs a fresh process
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, str(EXPERIMENTS / "recover_stack.py"), "--quick", "--devices", "2",
           "--restarts", "8", "--steps", "200", "--no-figures", "--no-compile-cache",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["devices"] == 2 and m["device_count"] == 2
    assert m["n_restarts"] == 8 and m["steps"] == 200
    assert 0.0 <= m["success_rate"] <= 1.0


# --- learn_features --------------------------------------------------------------------


def test_learn_features_classifies_held_out_images(runs):
    _, m = runs("learn_features")
    assert m["accuracy"] >= 0.95
    assert list(m["per_class_accuracy"]) == list(data.CLASS_NAMES)
    counts = np.array(m["confusion"])
    assert counts.shape == (4, 4) and counts.sum() == m["n_test"]
    assert m["accuracy"] == pytest.approx(np.trace(counts) / counts.sum())


def test_learn_features_classifies_held_out_digits(runs):
    _, m = runs("learn_features")
    d = m["digits"]
    counts = np.array(d["confusion"])
    assert counts.shape == (10, 10) and counts.sum() == d["n_test"] == 500
    assert d["n_train"] + d["n_test"] == 1797  # sklearn's bundled digits, all of them
    assert d["accuracy"] == pytest.approx(np.trace(counts) / counts.sum())
    assert d["accuracy"] >= 0.9  # --quick; the full run's number is in the README
    assert len(d["filter_matches"]) == 16


def test_learn_features_matches_every_first_layer_filter(runs):
    _, m = runs("learn_features")
    assert [f["filter"] for f in m["filter_matches"]] == list(range(8))
    names = set(filters.FILTER_NAMES) | {"box_3x3", "gaussian_3x3"}
    for f in m["filter_matches"]:
        assert f["best"] in names and f["best_up_to_sign"] in names
        assert -1.0 <= f["cosine"] <= 1.0
        assert abs(f["cosine_up_to_sign"]) >= f["cosine"] - 1e-12


# --- figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["recover_cross", "recover_stack", "recover_stack_map",
                                  "learn_features"])
def test_figures_are_valid_pngs(runs, name):
    out, m = runs(name)
    assert m["figures"], "no figures were written"
    for fig in m["figures"]:
        path = out / fig
        assert path.read_bytes()[:8] == PNG_SIGNATURE, fig
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50, fig
