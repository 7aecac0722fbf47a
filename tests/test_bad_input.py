"""A catalog of bad input and damaged state: every case ends with exit status 2 (bad input) or 1
(the machine ran out of something), exactly one stderr line ``vaeinf: error: ...`` naming the
value or file and what to do, and a run directory in a known state afterwards (untouched, or
holding only finished work). Cases run in-process through ``vaeinf.cli.main``; a few run the
console entry point as a subprocess.

Classes: one line instead of a traceback; nonsense refused up front; sizes refused or handled;
paths and the environment; damaged run directories and data files; streaming evaluation,
messages that tell the truth, temporary files and file modes; the workflow's job boundary.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from vaeinf.cli import main
from vaeinf.config import ConfigError, load_config
from vaeinf.errors import DamagedFile
from vaeinf.evaluation.likelihood import GroupedLogMeanExp, LogMeanExp, bound_curve, log_likelihood
from vaeinf.study import grid as study
from vaeinf.study import jobs

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = {
    "model.hidden": "[16]",
    "model.latent": "2",
    "train.epochs": "2",
    "train.val_points": "50",
    "eval.ks": "[1, 5]",
    "eval.nll_k": "20",
    "eval.max_points": "40",
    "eval.memory_mb": "16",
    "eval.moment_samples": "10",
    "eval.mi_points": "40",
    "eval.ais_steps": "10",
    "eval.n_images": "4",
    "eval.n_prior_samples": "4",
}


def sets(**over) -> list[str]:
    """``--set`` arguments of the tiny run, with ``over`` (dots as '__') replacing keys."""
    values = TINY | {k.replace("__", "."): v for k, v in over.items()}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def fails(capsys, argv, code: int = 2, *fragments: str) -> str:
    """Run ``vaeinf argv``: exit ``code``, stderr one line naming every fragment."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("vaeinf: error: "), err
    for f in fragments:
        assert f in err, (f, err)
    return err


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the SHA-256 of its bytes (the state of a directory)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> Path:
    """A tiny finished digits training (not evaluated), made once."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--out", str(run), *sets(), "--no-progress"]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the trained run to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only with its contents: a read-only tmpfs mounted over it as root
    (root ignores permissions), chmod 0555 otherwise; skips when neither works."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    held = folder.with_name(folder.name + ".held")
    shutil.copytree(folder, held)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs here")
    try:
        shutil.copytree(held, folder, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def no_space_after(monkeypatch, n_ok: int) -> None:
    """The (n_ok + 1)-th fsync, and every later one, fails as on a full disk."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > n_ok:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def fake_npz(path: Path, n: dict | None = None) -> Path:
    """A packed binarized-MNIST file of a few random images per split."""
    rng = np.random.default_rng(0)
    n = n or {"train": 30, "valid": 10, "test": 10}
    arrays = {
        k: np.packbits(rng.integers(0, 2, (m, 784), dtype=np.uint8), axis=1) for k, m in n.items()
    }
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------------------------------------
# 1. One line instead of a traceback


def test_config_file_whose_top_level_is_a_list_with_set(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- K: 5\n- seed: 1\n")
    fails(
        capsys,
        ["train", "--config", cfg, "--out", tmp_path / "r", "--set", "K=3"],
        2,
        f"'{cfg}'",
        "mapping",
        "list",
    )
    assert not (tmp_path / "r").exists()


def test_config_file_of_binary_garbage(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    fails(capsys, ["train", "--config", cfg, "--out", tmp_path / "r"], 2, f"'{cfg}'", "not")
    assert not (tmp_path / "r").exists()


def test_config_file_with_control_characters(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("K: 5\x07\n")
    fails(capsys, ["train", "--config", cfg, "--out", tmp_path / "r"], 2, "not valid YAML")


@pytest.mark.parametrize(
    "pair",
    [["train=5", "train.epochs=1"], ["train.epochs=1", "train=5"], ["model.hidden.x=1"]],
)
def test_set_of_a_section_and_its_key(tmp_path, capsys, pair):
    argv = ["train", "--out", tmp_path / "r"] + [a for p in pair for a in ("--set", p)]
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("vaeinf: error: "), err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["avb", "autoregressive", "vae"])
def test_empty_hidden_layers_are_refused(tmp_path, capsys, method):
    fails(
        capsys,
        ["train", "--out", tmp_path / "r", "--set", f"method={method}", "--set", "model.hidden=[]"],
        2,
        "'model.hidden'",
        "at least 1",
    )
    assert not (tmp_path / "r").exists()


def test_seed_beyond_what_torch_accepts_is_refused(tmp_path, capsys):
    fails(
        capsys,
        ["train", "--out", tmp_path / "r", "--set", f"seed={2**63 - 5}"],
        2,
        "'seed'",
        "< 4294967296",
    )
    assert not (tmp_path / "r").exists()


def test_largest_seed_trains_and_evaluates(tmp_path, capsys, one_thread):
    """Every use of the seed (model init, the data's fixed binarizations 3 * seed + split,
    epoch seeds, evaluation's seed + 1_000_000) accepts the largest allowed one."""
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), *sets(seed=str(2**32 - 1)), "--no-progress"]) == 0
    assert main(["evaluate", "--run", str(out)]) == 0
    assert (out / "metrics.json").exists()


def test_study_with_an_out_of_range_seed_fails_its_check():
    config = yaml.safe_load((Path(__file__).parent / "config" / "tiny.yaml").read_text())
    config["seeds"] = [0, 2**63 - 5]
    with pytest.raises(study.StudyError, match=r"seed=9223372036854775803 .*'seed'.*< 4294967296"):
        study.check_study(config)


def test_set_value_that_is_not_yaml(tmp_path, capsys):
    fails(
        capsys, ["train", "--out", tmp_path / "r", "--set", "model.hidden=[1"], 2, "not valid YAML"
    )


def test_set_with_an_empty_key_part(tmp_path, capsys):
    fails(
        capsys,
        ["train", "--out", tmp_path / "r", "--set", "train..epochs=1"],
        2,
        "expected KEY=VALUE",
    )


# ---------------------------------------------------------------------------------------------
# 2. Nonsense refused up front, by train as well as evaluate


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("train.lr=.inf", "'train.lr': expected a finite number"),
        ("train.lr=.nan", "'train.lr': expected a finite number"),
        ("train.eps=-1e-8", "'train.eps': -1e-08 is out of range; must be > 0"),
        ("eval.ks=[]", "'eval.ks'"),
        ("eval.n_prior_samples=-1", "'eval.n_prior_samples': -1 is out of range"),
        ("eval.n_images=-3", "'eval.n_images': -3 is out of range"),
        ("eval.memory_mb=0", "'eval.memory_mb': 0 is out of range"),
        ("eval.active_threshold=-.inf", "'eval.active_threshold'"),
        (
            "eval.collapse_threshold=0.01",
            "'eval.collapse_threshold': 0.01 is out of range; must be <= eval.active_threshold / 2",
        ),
        (
            "eval.nll_k=10000000000",
            "'eval.nll_k': 10000000000 is out of range; must be >= 1 and <= 1000000000",
        ),
        ("model.latent=1000000", "'model.latent'"),
        ("method_options={steps: 100000000}", "'method_options.steps'"),
    ],
)
def test_nonsense_values_are_refused_by_train(tmp_path, capsys, setting, fragment):
    argv = ["train", "--out", tmp_path / "r", "--set", setting]
    if setting.startswith("method_options"):
        argv += ["--set", "method=flow"]
    fails(capsys, argv, 2, fragment)
    assert not (tmp_path / "r").exists()


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(capsys, ["train", "--out", "", "--set", "train.epochs=1"], 2, "--out", "empty")
    assert tree(tmp_path) == {}


@pytest.mark.parametrize("value", ["-1", "nan", "0", "inf", "lots"])
def test_evaluate_memory_budget_must_be_positive_and_finite(trained, capsys, value):
    before = tree(trained)
    fails(capsys, ["evaluate", "--run", trained, "--memory-mb", value], 2, "--memory-mb", value)
    assert tree(trained) == before


def test_duplicate_key_in_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("K: 5\ntrain:\n  epochs: 3\n  epochs: 4\n")
    fails(
        capsys,
        ["train", "--config", cfg, "--out", tmp_path / "r"],
        2,
        f"'{cfg}'",
        "'epochs' is given twice",
        "lines 3 and 4",
    )
    assert not (tmp_path / "r").exists()


def test_duplicate_key_in_study_config(tmp_path):
    p = tmp_path / "study.yaml"
    p.write_text("datasets: [digits]\nmethods: [vae]\nmethods: [iwae]\n")
    with pytest.raises(study.StudyError, match="'methods' is given twice"):
        study.load_study(p)


def test_config_that_is_a_directory(tmp_path, capsys):
    fails(capsys, ["train", "--config", tmp_path, "--out", tmp_path / "r"], 2, "is a directory")


@pytest.mark.parametrize(
    "argv",
    [["train"], ["train", "--out"], ["frobnicate"], ["train", "--out", "x", "--bogus"], []],
)
def test_command_line_mistakes_are_one_line(capsys, argv):
    fails(capsys, argv, 2, "--help")


# ---------------------------------------------------------------------------------------------
# 3. Sizes refused (naming the limit) or handled


def test_huge_K_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "r"
    fails(
        capsys,
        ["train", "--out", out, *sets(K="1000000000")],
        2,
        "K = 1000000000",
        "train.batch_size = 100",
        "GiB of memory",
    )
    assert not out.exists()


def test_huge_prior_sample_count_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    fails(
        capsys,
        ["train", "--out", out, *sets(eval__n_prior_samples="100000000000")],
        2,
        "eval.n_prior_samples",
        "GiB of memory",
    )
    assert not out.exists()


def test_huge_batch_size_means_the_whole_training_set(tmp_path, capsys, one_thread):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), *sets(train__batch_size=str(10**30))]) == 0
    assert (out / "model.pt").exists()


def test_a_trillion_epochs_train_until_stopped(tmp_path, capsys, one_thread):
    """The schedule is computed per epoch: a trillion epochs start at once, and a SIGTERM (sent
    once the first checkpoint exists, while training's handler is installed) leaves one."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    out = tmp_path / "r"
    returned = threading.Event()

    def stop():
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not returned.is_set():  # training's handler turns the signal into a checkpoint
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop)
    killer.start()
    try:
        rc = main(["train", "--out", str(out), *sets(train__epochs=str(10**12)), "--no-progress"])
    finally:
        returned.set()
        killer.join()
    captured = capsys.readouterr()
    assert rc == 143, captured.err
    assert f"epoch 1/{10**12} " in captured.out
    assert captured.err.count("\n") == 1 and "stopped by signal 15" in captured.err
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] >= 1


def test_burda_schedule_is_lazy_and_unchanged():
    from vaeinf.core.train import burda_schedule, epoch_lr, n_epochs

    lrs = [1e-3 * 10 ** (-i / 7) for i in range(8) for _ in range(3**i)]
    assert burda_schedule() == lrs
    cfg = load_config(None, {"train": {"schedule": "burda", "epochs": 10**12}})
    assert n_epochs(cfg) == 3280 and epoch_lr(cfg, 3279) == lrs[-1]
    cfg = load_config(None, {"train": {"epochs": 10**12, "lr": 0.5}})
    assert n_epochs(cfg) == 10**12 and epoch_lr(cfg, 10**12 - 1) == 0.5


# ---------------------------------------------------------------------------------------------
# 4. Paths and the environment


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("keep me\n")
    fails(capsys, ["train", "--out", f, "--set", "train.epochs=1"], 2, f"'{f}' is a file")
    assert f.read_text() == "keep me\n"
    fails(capsys, ["train", "--out", f / "sub"], 2, f"lies below '{f}'")


def test_out_with_a_name_too_long(tmp_path, capsys):
    out = tmp_path / ("x" * 300)
    fails(capsys, ["train", "--out", out, "--set", "train.epochs=1"], 2, "300 bytes", "255")
    assert tree(tmp_path) == {}


def test_out_on_a_read_only_file_system(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        fails(
            capsys,
            ["train", "--out", ro / "run", "--set", "train.epochs=1"],
            2,
            f"'{ro}'",
            "choose a directory you may write to",
        )
        assert tree(ro) == {}


def test_evaluate_into_a_read_only_run_directory_fails_first(run, capsys, monkeypatch):
    before = tree(run)
    calls = []
    monkeypatch.setattr("vaeinf.evaluation.evaluate.bound_curve", lambda *a, **k: calls.append(a))
    with read_only(run):
        fails(capsys, ["evaluate", "--run", run], 2, f"'{run}'", "write to")
        assert tree(run) == before
    assert calls == []  # refused before any evaluation


def test_download_into_a_file(tmp_path, capsys):
    f = tmp_path / "data"
    f.write_text("")
    fails(capsys, ["download", "mnist", "--data-dir", f], 2, "--data-dir", "is a file")
    assert f.read_text() == ""


def test_full_disk_during_training_keeps_finished_epochs(tmp_path, capsys, monkeypatch, one_thread):
    out = tmp_path / "r"
    argv = ["train", "--out", str(out), *sets(train__epochs="3"), "--no-progress"]
    # writes: config.yaml, epoch 1's log and checkpoint, then epoch 2's log fails
    no_space_after(monkeypatch, 3)
    fails(capsys, argv, 1, "train_log.csv", "No space left on device", "finished work is kept")
    assert sorted(tree(out)) == ["checkpoint.pt", "config.yaml", "train_log.csv"]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1
    monkeypatch.undo()
    assert main(argv) == 0  # resumes from the checkpoint
    assert len((out / "train_log.csv").read_text().splitlines()) == 4


def test_full_disk_during_evaluation(run, capsys, monkeypatch, one_thread):
    before = tree(run)
    no_space_after(monkeypatch, 0)
    fails(capsys, ["evaluate", "--run", run], 1, "samples.npz", "No space left on device")
    assert tree(run) == before  # nothing half-written, no temporary file left


def test_out_of_memory_is_one_line(run, capsys, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("vaeinf.evaluation.evaluate.bound_curve", oom)
    fails(capsys, ["evaluate", "--run", run], 1, "out of memory", "eval.memory_mb")


# ---------------------------------------------------------------------------------------------
# 5. Damaged run directories and data files


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_model(run, capsys):
    truncate(run / "model.pt")
    before = tree(run)
    fails(
        capsys,
        ["evaluate", "--run", run],
        2,
        f"'{run / 'model.pt'}' is damaged",
        "delete it and rerun `vaeinf train",
        "resumes from checkpoint.pt",
    )
    assert tree(run) == before


def test_truncated_checkpoint(run, capsys):
    truncate(run / "checkpoint.pt")
    before = tree(run)
    fails(
        capsys,
        ["train", "--out", run, *sets()],
        2,
        f"'{run / 'checkpoint.pt'}' is damaged",
        "delete it to restart",
    )
    assert tree(run) == before


def test_checkpoint_of_garbage(run, capsys):
    (run / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    fails(capsys, ["train", "--out", run, *sets()], 2, "checkpoint.pt' is damaged")


def test_any_garbage_is_a_damaged_file(tmp_path):
    """Random bytes read as a checkpoint fail in many ways (bad pickle opcodes, lengths beyond
    memory, objects of the wrong type): each is the same one-line, exit-2 error."""
    from vaeinf.core.train import load_torch_file
    from vaeinf.errors import exit_status

    path, rng, damaged = tmp_path / "checkpoint.pt", np.random.default_rng(1), 0
    for _ in range(300):
        path.write_bytes(rng.bytes(int(rng.integers(1, 4000))))
        try:
            load_torch_file(path, "cpu", "delete it", weights_only=False)
        except DamagedFile as e:
            code, line = exit_status(e)
            assert code == 2 and "\n" not in line and str(path) in line
            damaged += 1
    # the rare payload that unpickles to some object is caught where train reads its keys
    assert damaged >= 290


def test_checkpoint_of_another_architecture(run, capsys, tmp_path, one_thread):
    """config.yaml deleted and the run retrained with narrower layers over the old checkpoint."""
    (run / "config.yaml").unlink()
    before = tree(run)
    err = fails(
        capsys,
        ["train", "--out", run, *sets(model__hidden="[8]")],
        2,
        "checkpoint.pt' does not match",
        "size mismatch",
    )
    assert "is damaged" not in err and tree(run) == before


def test_config_that_no_longer_matches_the_model(run, capsys):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden"] = [32, 32]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = tree(run)
    fails(
        capsys,
        ["evaluate", "--run", run],
        2,
        "model.pt' does not match the run's config.yaml",
        "restore config.yaml",
    )
    assert tree(run) == before


def test_config_of_garbage_in_the_run(run, capsys):
    (run / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    fails(capsys, ["evaluate", "--run", run], 2, "config.yaml")
    fails(capsys, ["train", "--out", run, *sets()], 2, "config.yaml", "delete it")


def test_run_without_config(run, capsys):
    (run / "config.yaml").unlink()
    fails(capsys, ["evaluate", "--run", run], 2, "no config.yaml")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "damaged"),
        ("epoch,lr,train_objective,val_LK,val_L1,seconds\n", "holds no epochs"),
        ("a,b\n1,2\n", "lacks column"),
    ],
)
def test_empty_or_damaged_train_log_is_found_before_evaluating(
    run, capsys, monkeypatch, content, fragment
):
    (run / "train_log.csv").write_text(content)
    before = tree(run)
    calls = []
    monkeypatch.setattr("vaeinf.evaluation.evaluate.bound_curve", lambda *a, **k: calls.append(a))
    fails(capsys, ["evaluate", "--run", run], 2, "train_log.csv", fragment, "rerun `vaeinf train")
    assert tree(run) == before and calls == []


def test_train_rewrites_a_lost_train_log(run, capsys):
    (run / "train_log.csv").write_text("")
    assert main(["train", "--out", str(run), *sets()]) == 0
    assert len((run / "train_log.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("missing", ["run", "model"])
def test_evaluate_without_a_trained_run(run, capsys, missing):
    target = run.parent / "nothing" if missing == "run" else run
    if missing == "model":
        (run / "model.pt").unlink()
    fails(capsys, ["evaluate", "--run", target], 2, f"'{target}'")
    assert not (run / "metrics.json").exists()


def test_data_file_with_a_bad_crc(tmp_path, capsys, monkeypatch):
    npz = fake_npz(tmp_path / "bm.npz")
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the stored (uncompressed) arrays
    npz.write_bytes(bytes(raw))
    monkeypatch.setenv("VAEINF_BINARIZED_MNIST_NPZ", str(npz))
    fails(
        capsys,
        ["train", "--out", tmp_path / "r", "--set", "dataset=binarized_mnist"],
        2,
        str(npz),
        "damaged",
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", ["empty split", "not a zip"])
def test_data_file_with_an_empty_split_or_not_a_zip(tmp_path, capsys, monkeypatch, content):
    npz = tmp_path / "bm.npz"
    if content == "empty split":
        fake_npz(npz, {"train": 30, "valid": 10, "test": 0})
    else:
        npz.write_bytes(b"PK\x03\x04 not really")
    monkeypatch.setenv("VAEINF_BINARIZED_MNIST_NPZ", str(npz))
    fails(
        capsys, ["train", "--out", tmp_path / "r", "--set", "dataset=binarized_mnist"], 2, str(npz)
    )
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# 6. Promises: streaming evaluation, true messages, temporary files, file modes


def test_streaming_log_mean_exp_equals_logsumexp():
    """Known answer: logsumexp over all columns at once, whatever the chunking, including points
    whose weights are all -inf (log 0) and weights that would overflow exp."""
    torch.manual_seed(0)
    a = torch.randn(5, 1003, dtype=torch.float64) * 50 + 700
    a[1] = -math.inf
    a[2, :500] = -math.inf
    exact = torch.logsumexp(a, 1) - math.log(a.shape[1])
    for s in (1, 7, 1003, 5000):
        acc = LogMeanExp(5)
        for c in a.split(s, 1):
            acc.add(c)
        torch.testing.assert_close(acc.value(), exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("K", [1, 3, 10, 64, 1000])
def test_streaming_groups_equal_the_reshape(K):
    torch.manual_seed(1)
    a = torch.randn(4, 1000, dtype=torch.float64) * 3
    g = 1000 // K
    exact = (torch.logsumexp(a[:, : g * K].reshape(4, g, K), -1) - math.log(K)).mean(-1)
    for s in (1, 7, 64, 333, 1000):
        acc = GroupedLogMeanExp(4, K, g)
        for c in a.split(s, 1):
            acc.add(c)
        torch.testing.assert_close(acc.value(), exact, rtol=0, atol=1e-9)


class FixedWeights(torch.nn.Module):
    """A model whose K log-weights per point are fixed numbers, drawn in order: the estimate
    must not depend on how evaluation chunks them."""

    dim, latent, eval_bytes_per_sample, stratified_proposal = 64, 2, 0, False

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.decoder = SimpleNamespace(net=[torch.nn.Linear(2, 64)])
        self.table, self.k = table, 0  # (K, N)

    def eval_log_weights(self, x, k, block=None):
        start = self.k
        self.k = (self.k + k) % len(self.table)
        rows = torch.arange(start, start + k) % len(self.table)
        return self.table[rows][:, x[:, 0].long()].float()  # (k, b)


def test_bound_curve_and_likelihood_do_not_depend_on_the_memory_budget():
    torch.manual_seed(2)
    n, k_max = 6, 1000
    table = torch.randn(k_max, n) * 4
    x = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 64).contiguous()
    exact = torch.logsumexp(table.double(), 0) - math.log(k_max)
    for mb in (0.01, 0.1, 1000):
        curve = bound_curve(FixedWeights(table), x, [1, 7, k_max], memory_mb=mb)
        assert curve[k_max]["mean"] == pytest.approx(exact.mean().item(), abs=1e-9)
        assert curve[1]["mean"] == pytest.approx(table[:, :].double().mean().item(), abs=1e-6)
        ll = log_likelihood(FixedWeights(table), x, K=k_max, memory_mb=mb)
        torch.testing.assert_close(ll["per_point"], exact, rtol=0, atol=1e-9)


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, capsys, monkeypatch):
    from vaeinf.core import train as train_module
    from vaeinf.errors import NonFiniteLoss

    real, calls = train_module.prepare, []

    def prepare(cfg, data=None):
        data, model, device = real(cfg, data)

        def step(*a):
            calls.append(1)
            if len(calls) > fail_after:
                raise NonFiniteLoss("loss is nan")
            return type(model).train_step(model, *a)

        model.train_step = step
        return data, model, device

    monkeypatch.setattr(train_module, "prepare", prepare)
    out = tmp_path / "r"
    fail_after = 0
    fails(
        capsys,
        ["train", "--out", out, *sets()],
        1,
        "epoch 0 batch 0",
        "no checkpoint had been written yet",
    )
    assert not (out / "checkpoint.pt").exists()
    shutil.rmtree(out)
    calls.clear()
    fail_after = 14  # 14 batches of 100 per epoch: fails as the second epoch starts
    fails(
        capsys,
        ["train", "--out", out, *sets()],
        1,
        "epoch 1 batch 0",
        f"the last good checkpoint is kept in {out / 'checkpoint.pt'}",
    )
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_temporary_files_of_a_killed_write_are_removed_on_the_next_start(run, capsys):
    leftovers = [run / ".model.pt.abc123.tmp", run / ".metrics.json.x_9y.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    assert main(["evaluate", "--run", str(run)]) == 0
    assert not any(p.exists() for p in leftovers)
    (run / ".checkpoint.pt.zz.tmp").write_bytes(b"half")
    assert main(["train", "--out", str(run), *sets()]) == 0
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask, one_thread):
    old = os.umask(umask)
    try:
        out = tmp_path / "r"
        assert main(["train", "--out", str(out), *sets(train__epochs="1")]) == 0
        assert main(["evaluate", "--run", str(out)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="'K'"):
        main(["--debug", "train", "--out", str(tmp_path / "r"), "--set", "K=0"])
    monkeypatch.setenv("VAEINF_DEBUG", "1")
    with pytest.raises(DamagedFile):
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "model.pt").write_bytes(b"x")
        (tmp_path / "r" / "config.yaml").write_text("{}\n")
        (tmp_path / "r" / "train_log.csv").write_text("")
        main(["evaluate", "--run", str(tmp_path / "r")])


def test_console_script_garbage_config_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(os.urandom(2000))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaeinf.cli",
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "r"),
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("vaeinf: error: ") and str(cfg) in r.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# 7. The workflow's job boundary: the job's log ends with the one line


def last_line(path: Path) -> str:
    return path.read_text().splitlines()[-1]


def test_train_job_with_bad_config_logs_one_line(tmp_path):
    log = tmp_path / "train.log"
    rc = jobs.train_job(str(tmp_path / "r"), {"K": 0}, log_path=str(log))
    assert rc == 2
    assert last_line(log).startswith("vaeinf: error: config key 'K'")
    assert "Traceback" not in log.read_text()


def test_train_job_discards_a_damaged_checkpoint_but_a_retry_reports_it(run, tmp_path, one_thread):
    overrides = load_config(run / "config.yaml").to_dict()
    truncate(run / "checkpoint.pt")
    log = tmp_path / "retry.log"
    rc = jobs.train_job(str(run), overrides, log_path=str(log), attempt=2)
    assert rc == 2 and "checkpoint.pt' is damaged" in last_line(log)
    log = tmp_path / "first.log"
    assert jobs.train_job(str(run), overrides, log_path=str(log), attempt=1) == 0
    assert "the checkpoint is unreadable: removing" in log.read_text()


def test_script_job_expected_error_ends_the_log_with_one_line(tmp_path):
    smk = SimpleNamespace(log=[str(tmp_path / "job.log")])
    with pytest.raises(SystemExit) as exit_info, jobs.job_log(smk):
        raise DamagedFile("'results/summary.csv' is damaged; rerun the aggregate rule")
    assert exit_info.value.code == 2
    text = (tmp_path / "job.log").read_text()
    assert text.splitlines() == [
        "vaeinf: error: 'results/summary.csv' is damaged; rerun the aggregate rule"
    ]


def test_script_job_unexpected_error_keeps_its_traceback(tmp_path):
    smk = SimpleNamespace(log=[str(tmp_path / "job.log")])
    with pytest.raises(ZeroDivisionError), jobs.job_log(smk):
        1 / 0  # noqa: B018
    assert "Traceback" in (tmp_path / "job.log").read_text()
