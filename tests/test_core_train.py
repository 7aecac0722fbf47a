"""Training: determinism, kill-and-resume equivalence, SIGTERM checkpoints, the NaN guard, the
Burda schedule, and one-line errors for bad input that leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from vaeinf.config import ConfigError, RunConfig, load_config
from vaeinf.core import bounds
from vaeinf.core.methods import NonFiniteLoss
from vaeinf.core.train import CHECKPOINT, burda_schedule, learning_rates, train

# Single-threaded subprocesses: the same config and seed must give identical bits on the CPU.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = ["--set", "model.hidden=[32]", "--set", "model.latent=4", "--set", "train.batch_size=50"]


def vaeinf(*args, check=True, **kw):
    cmd = [sys.executable, "-m", "vaeinf.cli", *map(str, args)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stderr}")
    return r


def state(run: Path) -> dict:
    return torch.load(run / "model.pt", weights_only=True)


def assert_same_model(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    la, lb = (pd.read_csv(p / "train_log.csv").drop(columns="seconds") for p in (a, b))
    pd.testing.assert_frame_equal(la, lb)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 20-epoch run, trained in a subprocess like the resumed ones."""
    run = tmp_path_factory.mktemp("ref") / "run"
    vaeinf("train", "--out", run, "--set", "train.epochs=20", *SMALL)
    return run


def test_same_seed_same_result(reference, tmp_path):
    vaeinf("train", "--out", tmp_path / "again", "--set", "train.epochs=20", *SMALL)
    assert_same_model(reference, tmp_path / "again")


def test_different_seed_differs(reference, tmp_path):
    vaeinf("train", "--out", tmp_path / "s1", "--set", "train.epochs=20", "--set", "seed=1", *SMALL)
    w = "decoder.net.0.weight"
    assert not torch.equal(state(reference)[w], state(tmp_path / "s1")[w])


def _log_rows(run: Path) -> int:
    try:
        return max(0, len((run / "train_log.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def start_training(run: Path) -> subprocess.Popen:
    """The 20-epoch reference training, started in the background (stderr captured)."""
    args = ["train", "--out", run, "--set", "train.epochs=20", *SMALL]
    return subprocess.Popen(
        [sys.executable, "-m", "vaeinf.cli", *map(str, args)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("after_epochs", [0, 5, 15])
def test_sigkill_at_any_point_then_resume_is_identical(reference, tmp_path, after_epochs):
    """SIGKILL before the first checkpoint, and mid-epoch after 5 and 15 finished epochs."""
    run = tmp_path / "run"
    p = start_training(run)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if (run / "config.yaml").exists() and _log_rows(run) >= after_epochs:
            break
        time.sleep(0.01)
    time.sleep(0.03)  # land inside the next epoch
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not (run / "model.pt").exists(), "killed too late: the run had already finished"
    vaeinf("train", "--out", run, "--set", "train.epochs=20", *SMALL)
    assert_same_model(reference, run)


def test_sigterm_checkpoints_mid_epoch_and_resumes_identically(reference, tmp_path):
    run = tmp_path / "run"
    p = start_training(run)
    deadline = time.monotonic() + 60
    while not (run / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 5, "checkpoint on SIGTERM must take seconds"
    assert p.returncode == 143, err
    assert "checkpoint written" in err
    # The signal lands mid-epoch or during validation (then the checkpoint is at batch 0).
    ck = torch.load(run / CHECKPOINT, weights_only=False)
    assert 0 < ck["epoch"] < 20 or ck["batch"] > 0
    vaeinf("train", "--out", run, "--set", "train.epochs=20", *SMALL)
    assert_same_model(reference, run)


def test_sigterm_mid_epoch_deterministically(reference, tmp_path, monkeypatch, one_thread):
    """SIGTERM delivered during batch 11 of epoch 1: the checkpoint is mid-epoch, and the
    resumed run (a subprocess, like the reference) ends bit-identical to the reference."""
    from vaeinf.core.methods.base import Method
    from vaeinf.core.train import Preempted

    real_step, calls = Method.train_step, {"n": 0}

    def step(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 28 + 12:  # 28 batches of 50 per epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(Method, "train_step", step)
    from vaeinf.cli import _parse_set

    overrides = _parse_set(["train.epochs=20", *SMALL[1::2]])
    with pytest.raises(Preempted, match="epoch 1 batch 12"):
        train(load_config(None, overrides), tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert (ck["epoch"], ck["batch"]) == (1, 12) and ck["rng"] is not None
    monkeypatch.undo()
    vaeinf("train", "--out", tmp_path / "run", "--set", "train.epochs=20", *SMALL)
    assert_same_model(reference, tmp_path / "run")


def test_nan_stops_loudly_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    # The count is of the training steps' losses: the SNR measurement, which evaluates the loss
    # too, is off.
    cfg = load_config(None, {"train": {"epochs": 4, "batch_size": 100, "snr_draws": 0}})
    real_loss, calls = bounds.loss, {"n": 0}
    n_batches = 14  # 1397 digits / 100

    def poisoned(model, x, K, objective, estimator):
        calls["n"] += 1
        loss, value = real_loss(model, x, K, objective, estimator)
        if calls["n"] == n_batches * 2 + 3:  # epoch index 2, batch 2
            loss = loss * float("nan")
        return loss, value

    monkeypatch.setattr(bounds, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2 batch 2"):
        train(cfg, tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)
    assert ck["epoch"] == 2 and ck["batch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert not (tmp_path / "run" / "model.pt").exists()


def test_cli_nan_error_is_one_line(tmp_path):
    r = vaeinf(
        "train",
        "--out",
        tmp_path / "run",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.epochs=3",
        check=False,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "non-finite training loss at epoch" in r.stderr, r.stderr


def test_burda_schedule():
    lrs = burda_schedule()
    assert len(lrs) == 3280
    assert lrs[0] == 1e-3 and lrs[1] == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert lrs[1:4] == [lrs[1]] * 3 and lrs[-1] == pytest.approx(1e-4)
    cfg = RunConfig()
    cfg.train.schedule, cfg.train.epochs = "burda", None
    assert learning_rates(cfg) == lrs


BAD = [
    (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    (["--set", "K=five"], "config key 'K': expected int, got 'five'"),
    (["--set", "K=0"], "config key 'K': 0 is out of range; must be >= 1"),
    (
        ["--set", "dataset=cifar"],
        "unknown dataset 'cifar'; allowed: binarized_mnist, digits, mnist",
    ),
    (["--set", "method=vampprior"], "unknown method 'vampprior'; allowed:"),
    (["--set", "estimator=reinforce"], "config key 'estimator': expected one of"),
    (
        ["--set", "method=vae", "--set", "estimator=dreg"],
        "'dreg' is not available for method 'vae'",
    ),
    (["--set", "train.lr=-1"], "'train.lr': -1.0 is out of range"),
    (["--set", "binarization=dynamic", "--set", "dataset=binarized_mnist"], "static"),
    (["--set", "dataset=mnist", "--set", "data_dir=/nonexistent"], "/nonexistent"),
    (["--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' does not exist"),
    (["--set", "nonsense"], "expected KEY=VALUE"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    from vaeinf.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaeinf: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert message in err, err
    assert not out.exists()


def test_bad_input_through_the_console_script(tmp_path):
    r = vaeinf("train", "--out", tmp_path / "run", "--set", "K=0", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_config_file_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {epochs: [1, 2]}\n")
    with pytest.raises(ConfigError, match="'train.epochs': expected int or null"):
        load_config(p)
    p.write_text("eval:\n  ks: [1, 0]\n")
    with pytest.raises(ConfigError, match=r"'eval.ks\[1\]': 0 is out of range"):
        load_config(p)
    p.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_changed_config_in_existing_run_dir_is_refused(tmp_path):
    run = tmp_path / "run"
    vaeinf("train", "--out", run, "--set", "train.epochs=1", *SMALL)
    r = vaeinf(
        "train", "--out", run, "--set", "train.epochs=1", "--set", "K=7", *SMALL, check=False
    )
    assert r.returncode == 2 and "another training identity (differs in: K)" in r.stderr


def test_a_run_is_known_by_its_training_alone(tmp_path):
    """Other evaluation or operational settings resume the same run; evaluate takes its own
    settings and records them; the training identity cannot be changed by evaluate."""
    run = tmp_path / "run"
    small_eval = [
        "--set",
        "eval.ks=[1,5]",
        "--set",
        "eval.nll_k=20",
        "--set",
        "eval.ais_points=0",
        "--set",
        "eval.gap_points=0",
    ]
    small_eval += ["--set", "eval.max_points=50", "--set", "eval.mi_points=50"]
    vaeinf("train", "--out", run, "--set", "train.epochs=1", *SMALL, *small_eval)
    model = (run / "model.pt").read_bytes()
    # Same identity, other evaluation and operational settings: resumes (nothing to train).
    r = vaeinf(
        "train", "--out", run, "--set", "train.epochs=1", *SMALL, *small_eval,
        "--set", "eval.nll_k=30", "--set", "train.checkpoint_every=3", "--set", "train.device=cpu",
    )  # fmt: skip
    assert "resuming from" in r.stdout and (run / "model.pt").read_bytes() == model
    assert "eval" not in yaml.safe_load((run / "config.yaml").read_text())
    assert yaml.safe_load((run / "eval.yaml").read_text())["nll_k"] == 30
    # Evaluate with the run's settings, then with others given on the command line.
    vaeinf("evaluate", "--run", run)
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["metrics"]["test_nll"]["K"] == 30 and doc["config"]["eval"]["nll_k"] == 30
    vaeinf("evaluate", "--run", run, "--set", "eval.nll_k=40", "--set", "eval.ks=[1,2]")
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["metrics"]["test_nll"]["K"] == 40 and doc["config"]["eval"]["ks"] == [1, 2]
    assert (run / "model.pt").read_bytes() == model
    r = vaeinf("evaluate", "--run", run, "--set", "K=7", check=False)
    assert r.returncode == 2 and "evaluate takes only eval.* settings" in r.stderr
    r = vaeinf("evaluate", "--run", run, "--set", "eval.nll_k=0", check=False)
    assert r.returncode == 2 and "'eval.nll_k': 0 is out of range" in r.stderr


# ---------------------------------------------------------------------------------------------
# When a run ends: early stopping on the smoothed validation bound, the step budget, the cap.


def _rows(curve, smoothing=0.0, steps_per_epoch=14):
    from vaeinf.core.train import smoothed

    rows, s = [], None
    for i, v in enumerate(curve):
        s = smoothed(s, v, smoothing)
        rows.append({"epoch": i + 1, "steps": steps_per_epoch * (i + 1), "val_bound": v,
                     "val_smoothed": s})  # fmt: skip
    return rows


def _stop_epoch(curve, **train):
    """The first epoch after which stop_reason ends the run, and the reason."""
    from vaeinf.core.train import stop_reason

    cfg = load_config(None, {"train": {"epochs": len(curve), **train}})
    rows = _rows(curve, cfg.train.smoothing)
    for n in range(1, len(rows) + 1):
        if reason := stop_reason(rows[:n], cfg):
            return n, reason
    return None, None


def test_stopping_rule_on_a_synthetic_curve():
    """A curve that rises by 1 nat per epoch to epoch 6, then by 0.01 per epoch: with
    min_delta 0.05 the last improvement is epoch 6, so patience 3 stops after epoch 9;
    with min_delta 0 every epoch improves and the cap (20) ends it."""
    curve = [float(min(e, 6) + 0.01 * max(e - 6, 0)) for e in range(1, 21)]
    assert _stop_epoch(curve, patience=3, min_delta=0.05) == (9, "converged")
    assert _stop_epoch(curve, patience=3, min_delta=0.0) == (20, "cap")
    assert _stop_epoch(curve) == (20, "cap")
    # A fall after the peak: no improvement on any epoch after 6 whatever min_delta.
    fall = [float(e) if e <= 6 else 6.0 - e for e in range(1, 21)]
    assert _stop_epoch(fall, patience=5) == (11, "converged")
    # The budget: 14 steps an epoch, 100 steps are spent in epoch 8.
    assert _stop_epoch(curve, max_steps=100) == (8, "budget")
    # A converged run at the same epoch as the budget converged.
    assert _stop_epoch(fall, patience=5, max_steps=14 * 11) == (11, "converged")
    # A plateau at the start (4 flat epochs, then the rise): patience 3 alone stops it after
    # epoch 4; min_epochs 8 lets it rise, and it stops 3 epochs after its last improvement.
    plateau = [0.0] * 4 + [float(e) for e in range(1, 7)] + [6.0] * 10
    assert _stop_epoch(plateau, patience=3, min_delta=0.05) == (4, "converged")
    assert _stop_epoch(plateau, patience=3, min_delta=0.05, min_epochs=8) == (13, "converged")


def test_smoothing_waits_out_a_single_noisy_epoch():
    """One spuriously high epoch (a lucky validation draw) stops an unsmoothed rule early;
    the moving average (weight 0.5) keeps improving past it, so the run goes on."""
    noisy = [1.0, 2.0, 3.0, 6.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.5, 9.0, 9.5]
    assert _stop_epoch(noisy, patience=3) == (7, "converged")
    assert _stop_epoch(noisy, patience=3, smoothing=0.5) == (12, "cap")


def test_best_epoch_is_the_first_highest():
    from vaeinf.core.train import best_epoch

    assert best_epoch(_rows([1.0, 3.0, 2.0, 3.0, 0.0])) == 2


def _synthetic_validation(monkeypatch, curve):
    """validation_bounds returns ``curve[epoch]`` (in call order) for every K, so that when the
    run stops and which state is best are known in advance."""
    import vaeinf.core.train as train_mod

    calls = {"n": 0}

    def fake(model, x, Ks, seed):
        v = curve[calls["n"]]
        calls["n"] += 1
        return [v] * len(Ks)

    monkeypatch.setattr(train_mod, "validation_bounds", fake)
    return calls


#: Peaks at epoch 3, then falls: patience 3 stops after epoch 6.
PEAK = [-30.0, -29.0, -28.0, -28.5, -29.5, -29.6, -29.7, -29.8]
TINY = {"model": {"hidden": [16], "latent": 2}, "train": {"batch_size": 200, "val_points": 50}}


def test_the_saved_model_is_the_best_validation_state(tmp_path, monkeypatch, one_thread):
    """The run stops (converged) after epoch 6 and saves the state after epoch 3, which is the
    last state of the same run capped at 3 epochs; the checkpoint keeps the last state too."""
    from vaeinf.config import merge

    _synthetic_validation(monkeypatch, PEAK)
    cfg = load_config(None, merge(TINY, {"train": {"epochs": 8, "patience": 3}}))
    train(cfg, tmp_path / "a", progress=False)
    log = pd.read_csv(tmp_path / "a" / "train_log.csv", keep_default_na=False)
    assert list(log["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert list(log["stop"]) == ["", "", "", "", "", "converged"]
    assert list(log["steps"]) == [7 * e for e in range(1, 7)]  # 1397 digits / 200 -> 7 batches

    _synthetic_validation(monkeypatch, PEAK)
    train(load_config(None, merge(TINY, {"train": {"epochs": 3}})), tmp_path / "b", progress=False)
    assert pd.read_csv(tmp_path / "b" / "train_log.csv")["stop"].iloc[-1] == "cap"
    best, at3 = state(tmp_path / "a"), state(tmp_path / "b")
    last = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(best[k], at3[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)


def test_resume_mid_patience_stops_where_an_uninterrupted_run_does(
    tmp_path, monkeypatch, one_thread
):
    """SIGTERM inside epoch 5 (two epochs into the patience after the peak at epoch 3): the
    resumed run stops after epoch 6 as well, with the same log and the same saved state."""
    from vaeinf.config import merge
    from vaeinf.core.methods.base import Method
    from vaeinf.core.train import Preempted

    cfg = load_config(None, merge(TINY, {"train": {"epochs": 8, "patience": 3}}))
    _synthetic_validation(monkeypatch, PEAK)
    train(cfg, tmp_path / "ref", progress=False)

    calls = _synthetic_validation(monkeypatch, PEAK)
    real_step, steps = Method.train_step, {"n": 0}

    def step(self, *a, **kw):
        steps["n"] += 1
        if steps["n"] == 7 * 4 + 3:  # epoch index 4, batch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(Method, "train_step", step)
    with pytest.raises(Preempted, match="epoch 4 batch 3"):
        train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(Method, "train_step", real_step)
    assert calls["n"] == 4
    # The resumed run validates epochs 5 and 6 only: the rest of the curve from where it was.
    _synthetic_validation(monkeypatch, PEAK[4:])
    train(cfg, tmp_path / "run", progress=False)
    assert_same_model(tmp_path / "ref", tmp_path / "run")
    # Run again after it ended: nothing more is trained, the same state is saved.
    _synthetic_validation(monkeypatch, [])
    train(cfg, tmp_path / "run", progress=False)
    assert_same_model(tmp_path / "ref", tmp_path / "run")
