"""Runs every experiment with ``--quick`` (in-process, as a notebook would) and checks its
metrics.json and PNG figures; ``recover_stack --devices 2`` runs in a subprocess."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import matplotlib.image
import numpy as np
import pytest

from jaxconv import data, filters

pytestmark = pytest.mark.slow

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, out, *extra):
    returned = _load(name).main(["--quick", "--out", str(out), "--seed", "0", *extra])
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


def test_recover_stack_devices_flag_needs_the_devices_before_jax_starts(tmp_path):
    if jax.device_count() >= 2:
        pytest.skip("this process already has several devices")
    with pytest.raises(RuntimeError, match=r"--devices 2 needs 2 devices.*XLA_FLAGS"):
        _load("recover_stack").main(["--quick", "--devices", "2", "--out", str(tmp_path)])


def test_recover_stack_runs_on_two_devices(tmp_path):
    # XLA reads the device count when jax is imported, so this needs a fresh process
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, str(EXPERIMENTS / "recover_stack.py"), "--quick", "--devices", "2",
           "--restarts", "8", "--steps", "200", "--no-figures", "--out", str(tmp_path)]
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


def test_learn_features_matches_every_first_layer_filter(runs):
    _, m = runs("learn_features")
    assert [f["filter"] for f in m["filter_matches"]] == list(range(8))
    names = set(filters.FILTER_NAMES) | {"box_3x3", "gaussian_3x3"}
    for f in m["filter_matches"]:
        assert f["best"] in names and f["best_up_to_sign"] in names
        assert -1.0 <= f["cosine"] <= 1.0
        assert abs(f["cosine_up_to_sign"]) >= f["cosine"] - 1e-12


# --- figures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["recover_cross", "recover_stack", "learn_features"])
def test_figures_are_valid_pngs(runs, name):
    out, m = runs(name)
    assert m["figures"], "no figures were written"
    for fig in m["figures"]:
        path = out / fig
        assert path.read_bytes()[:8] == PNG_SIGNATURE, fig
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50, fig
