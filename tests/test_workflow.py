"""The Snakemake study: lint and format, the DAG of both configs, config validation, the study
helpers, and one real end-to-end run of a tiny config (every rule, every figure, the manuscript
check) with the rerun and rebuild paths the README documents.

Every Snakemake call runs in a copy of the workflow in a temporary directory, laid out like a
fresh clone, so the repository's own results/ are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from vaeinf.cli import _parse_set
from vaeinf.config import RunConfig, TrainConfig, merge, validate
from vaeinf.report.figures import FIGURES
from vaeinf.report.tables import TABLES
from vaeinf.report.tables.format import mean_sd, pivot_table
from vaeinf.report.variables import paper_variables
from vaeinf.study import grid as study
from vaeinf.study import jobs, jobserver

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
TINY = "tests/config/tiny.yaml"
RUN = "results/digits/iwae/k5/seed0"
HAS_QUARTO = shutil.which("quarto") is not None

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")


def make_tree(dest: Path) -> Path:
    """Copy what a fresh clone has of the workflow (no results) into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "_generated", "_output", ".quarto")
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    (dest / "slurm").symlink_to(os.readlink(REPO / "slurm"))
    (dest / "paper").mkdir()
    for name in (
        "index.qmd",
        "_quarto.yml",
        "references.bib",
        "preview.lua",
        "paper.css",
        "paper.typ",
    ):
        shutil.copy2(REPO / "paper" / name, dest / "paper" / name)
    (dest / "tests" / "config").mkdir(parents=True)
    shutil.copy2(REPO / TINY, dest / TINY)
    return dest


@pytest.fixture(scope="session")
def stub_bin(tmp_path_factory) -> Path:
    """A folder with a ``scontrol`` that fails at once, first on the jobs' PATH.

    The Slurm executor plugin runs ``scontrol show config`` whenever Snakemake starts; with a
    Slurm client installed but no controller running (as the Slurm tests leave this machine)
    that call waits 10 s for its timeout. Local execution never needs it.
    """
    d = tmp_path_factory.mktemp("stub_bin")
    if shutil.which("scontrol"):
        (d / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (d / "scontrol").chmod(0o755)
    return d


_STUB: list[Path] = []


@pytest.fixture(autouse=True)
def _use_stub(stub_bin):
    _STUB[:] = [stub_bin]


def snakemake(
    cwd: Path, *args: str, timeout: float = 600, served: bool = False
) -> subprocess.CompletedProcess:
    """Snakemake in ``cwd``; vaeinf comes from ``cwd/src`` when the tree has its own copy.
    ``served``: under the job server, as ``make study`` runs it."""
    env = {k: v for k, v in os.environ.items() if k != "VAEINF_BINARIZED_MNIST_NPZ"}
    env["PATH"] = os.pathsep.join([*map(str, _STUB), str(BIN), env.get("PATH", "")])
    if (cwd / "src" / "vaeinf").is_dir():
        env["PYTHONPATH"] = str(cwd / "src")
    server = [sys.executable, "-m", "vaeinf.study.jobserver"] if served else []
    return subprocess.run(
        [*server, str(SNAKEMAKE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_stats(output: str) -> dict[str, int]:
    """The first 'Job stats' table Snakemake printed: {rule: count}."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    if m is None:
        return {}
    stats = {}
    for line in m[1].splitlines():
        rule, count = line.split()
        stats[rule] = int(count)
    stats["total"] = int(m[2])
    return stats


def planned(cwd: Path, *args: str) -> dict[str, int]:
    """The jobs a dry run plans: {rule: count}."""
    r = snakemake(cwd, "--quiet", "rules", "--dry-run", *args)  # args may start with targets
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return job_stats(r.stdout + r.stderr)


def expected(
    n_runs: int, downloads: int = 0, preview: bool = True, datasets: int = 1
) -> dict[str, int]:
    """Jobs of the default target; ``preview``: paper.render is auto (false: no rendering)."""
    stats = {
        "train": n_runs,
        "evaluate": n_runs,
        "cost": datasets,
        "aggregate": 1,
        "table": len(TABLES),
        "figure": len(FIGURES),
        "variables": 1,
        "setup": 1,
        "bound_and_time_html": 1,
        "provenance": 1,
        "check_manuscript": 1,
        "all": 1,
    }
    if downloads:
        stats["download"] = downloads
    if HAS_QUARTO and preview:
        stats["paper"] = 1
    elif preview:
        stats["preview"] = 1  # no Quarto: the preview rendered without it
    stats["total"] = sum(stats.values())
    return stats


# ---------------------------------------------------------------------------------------------
# Lint and format


def test_snakefmt_check():
    snakefmt = BIN / "snakefmt"
    if not snakefmt.exists():
        pytest.skip("snakefmt is not installed")
    r = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_workflow_files():
    ruff = BIN / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed")
    files = [
        "workflow/scripts",
        "src/vaeinf/study",
        "src/vaeinf/report",
        "tests/test_workflow.py",
        "tests/test_preview.py",
        "tests/test_manuscript.py",
    ]
    for args in (["check"], ["format", "--check"]):
        r = subprocess.run([str(ruff), *args, *files], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint(tmp_path):
    r = snakemake(make_tree(tmp_path), "--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# The DAG of both configs


def test_dry_run_never_loads_torch(tmp_path):
    """Parsing the workflow (every dry run) imports vaeinf's light modules only."""
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    r = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(SNAKEMAKE),
            "-n",
            "--configfile",
            "config/mnist.yaml",
        ],
        cwd=make_tree(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "vaeinf.study.grid" in imported and "vaeinf.config" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "zuko")}


def test_dry_run_default_config(tmp_path):
    r = snakemake(make_tree(tmp_path), "--dry-run", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert len(cfg["methods"]) == 6 and cfg["Ks"] == [1, 2, 5, 10, 50] and len(cfg["seeds"]) == 3
    assert all(ks == [1, 5, 50] for ks in cfg["method_Ks"].values()) and len(cfg["method_Ks"]) == 4
    assert len(cfg["variants"]) == 7 and all(
        v["Ks"] in ([50], [10]) for v in cfg["variants"].values()
    )
    # (VAE and IWAE x 5 Ks + 4 methods x 3 Ks) x 3 seeds, and 4 ablations and 3 objectives at
    # one K each x 3 seeds
    assert job_stats(r.stdout + r.stderr) == expected((2 * 5 + 4 * 3) * 3 + 21)


def test_slurm_profile_from_the_root(tmp_path):
    """`snakemake --profile slurm` resolves the profile (the root's slurm symlink) and plans the
    default study for the Slurm executor."""
    assert (REPO / "slurm").is_symlink() and (REPO / "slurm/profile.yaml").is_file()
    r = snakemake(make_tree(tmp_path), "--profile", "slurm", "--dry-run", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Using profile slurm" in r.stderr
    assert job_stats(r.stdout + r.stderr) == expected((2 * 5 + 4 * 3) * 3 + 21)
    profile = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    assert profile["rerun-incomplete"] is True and profile["latency-wait"] >= 30


def test_dry_run_mnist_config(tmp_path):
    r = snakemake(
        make_tree(tmp_path), "--dry-run", "--quiet", "rules", "--configfile", "config/mnist.yaml"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # 2 datasets x (6 methods x 3 Ks + 4 ablations x K = 50 + IWAE and 3 objectives x K = 64)
    # x 3 seeds; one download per dataset (no data/ here)
    assert job_stats(r.stdout + r.stderr) == expected(108 + 24 + 24, downloads=2, datasets=2)
    cfg = yaml.safe_load((REPO / "config/mnist.yaml").read_text())
    assert cfg["run"]["model"]["preset"] == "burda1"
    assert cfg["run"]["train"]["schedule"] == "burda"
    assert cfg["run"]["eval"]["nll_k"] == 5000


def test_bad_config_stops_before_any_job(tmp_path):
    tree = make_tree(tmp_path)
    (tree / "bad.yaml").write_text("datasets: [digits]\nmethods: [vae]\nKs: [0, 5]\n")
    r = snakemake(tree, "--cores", "1", "--configfile", "bad.yaml")
    assert r.returncode != 0
    assert "instance['Ks'][0]" in r.stderr and "minimum of 1" in r.stderr
    assert not (tree / "results").exists() and not (tree / "logs").exists()


def test_dry_run_one_variant(tmp_path):
    """One ablation's run is a target of its own: its training and evaluation, nothing else."""
    tree = make_tree(tmp_path)
    target = "results/digits/iwae-dreg/k50/seed0/metrics.json"
    r = snakemake(tree, target, "--dry-run", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_stats(r.stdout + r.stderr) == {"train": 1, "evaluate": 1, "total": 2}
    # Only the study's variants are run names.
    r = snakemake(tree, "results/digits/iwae-nope/k50/seed0/metrics.json", "--dry-run")
    assert r.returncode != 0


BAD_VARIANTS = [
    ("  nope: {method: lstm}\n", "variant 'nope': key 'method': unknown base method 'lstm'"),
    (
        "  slow: {method: iwae, train: {epochs: 0}}\n",
        "variant 'slow': run config of dataset=digits K=1 seed=0",
    ),
    ("  wide: {method: iwae, model: {width: 3}}\n", "variant 'wide': unknown config key"),
    ("  iwae: {method: iwae, estimator: stl}\n", "variant 'iwae': the name of a method"),
    ("  a/b: {method: iwae}\n", "variant 'a/b': not a valid name"),
    ("  twice: {method: iwae}\n  twice: {method: vae}\n", "key 'twice' is given twice"),
    ("  few: {method: iwae, Ks: [0]}\n", "variant 'few': key 'Ks': [0]"),
    ("  seeded: {method: iwae, seed: 3}\n", "variant 'seeded': key 'seed'"),
]


@pytest.mark.parametrize(("lines", "message"), BAD_VARIANTS, ids=lambda v: str(v)[:12])
def test_bad_variant_stops_before_any_job(tmp_path, lines, message):
    """A bad variant (unknown base, bad override, a method's name, a name with '/', a name
    given twice, Ks below 1, a grid key) stops the dry run with one line naming it."""
    tree = make_tree(tmp_path)
    cfg = {k: v for k, v in yaml.safe_load((tree / TINY).read_text()).items() if k != "variants"}
    (tree / "bad.yaml").write_text(yaml.safe_dump(cfg) + "variants:\n" + lines)
    r = snakemake(tree, "--dry-run", "--configfile", "bad.yaml")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if message in line]
    assert errors, out[-3000:]
    assert not (tree / "results").exists() and not (tree / "logs").exists()


# ---------------------------------------------------------------------------------------------
# Study helpers (no Snakemake)


def _tiny() -> dict:
    cfg = yaml.safe_load((REPO / TINY).read_text())
    return {"method_overrides": {}, "dataset_overrides": {}, **cfg}


def test_two_variants_of_one_method_never_share_a_path():
    cfg = _tiny() | {
        "variants": {
            "iwae-stl": {"method": "iwae", "estimator": "stl"},
            "iwae-dreg": {"method": "iwae", "estimator": "dreg", "Ks": [5]},
        }
    }
    study.check_study(cfg)
    runs = study.runs(cfg)
    assert len({r.dir for r in runs}) == len(runs) == 2 * 2 + 2 + 1
    assert "results/digits/iwae-stl/k1/seed0" in {r.dir for r in runs}
    assert [r.dir for r in runs if r.variant == "iwae-dreg"] == [
        "results/digits/iwae-dreg/k5/seed0"
    ]
    stl, dreg = (study.run_config(cfg, "digits", v, 5, 0) for v in ("iwae-stl", "iwae-dreg"))
    assert (stl.method, stl.variant, stl.estimator) == ("iwae", "iwae-stl", "stl")
    assert (dreg.method, dreg.variant, dreg.estimator) == ("iwae", "iwae-dreg", "dreg")
    assert stl.identity() != dreg.identity()
    base = study.run_config(cfg, "digits", "iwae", 5, 0)
    assert base.variant is None and base.estimator == "standard"
    assert study.labels(cfg)["iwae"] == "IWAE" and study.labels(cfg)["iwae-stl"] == "iwae-stl"


def test_a_variant_at_a_k_of_its_own():
    """A variant may run at a K the study's methods do not (IWAE at another objective's
    samples): its runs, its evaluation's K, its cost contender; the other runs unchanged."""
    from vaeinf.study.cost import study_contenders

    cfg = _tiny() | {"variants": {"iwae-k8": {"method": "iwae", "Ks": [8]}}}
    study.check_study(cfg)
    runs = study.runs(cfg)
    assert [r.dir for r in runs if r.variant == "iwae-k8"] == ["results/digits/iwae-k8/k8/seed0"]
    assert len(runs) == 2 * 2 + 1
    assert 8 in study.run_config(cfg, "digits", "iwae-k8", 8, 0).eval.ks
    assert 8 not in study.run_config(cfg, "digits", "iwae", 5, 0).eval.ks
    assert ("iwae-k8", 8) in study_contenders(cfg, "digits")


def test_run_overrides_and_set_args_round_trip():
    cfg = _tiny() | {"method_overrides": {"iwae": {"train": {"lr": 5e-4}}}}
    over = study.run_overrides(cfg, "digits", "iwae", 5, 0)
    assert over["train"] == {"epochs": 2, "val_points": 100, "checkpoint_every": 1,
                             "device": "cpu", "snr_draws": 8, "snr_points": 4,
                             "lr": 5e-4}  # fmt: skip
    assert over["eval"]["ks"] == [1, 5, 20]  # every grid K is evaluated
    assert (over["dataset"], over["method"], over["K"], over["seed"]) == ("digits", "iwae", 5, 0)
    args = study.set_args(over)
    assert _parse_set(args[1::2]) == over  # what `vaeinf train --set` reads back
    assert study.resolved_run_config(over).train.lr == 5e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["vae", "nope"]}, "key 'methods[1]': unknown method 'nope'"),
        ({"run": {"train": {"epochs": 0}}}, "config key 'train.epochs'"),
        ({"run": {"K": 3}}, "key 'run.K' is set by the grid"),
        (
            {"method_overrides": {"iwae": {"model": {"width": 3}}}},
            "unknown config key 'model.width'",
        ),
        ({"dataset_overrides": {"nope": {}}}, "key 'dataset_overrides.nope'"),
    ],
)
def test_check_study_names_the_key(change, message):
    with pytest.raises(study.StudyError, match=re.escape(message)):
        study.check_study(_tiny() | change)


def test_stale_files_resume_or_restart(tmp_path):
    cfg = validate(RunConfig(train=TrainConfig(epochs=3)))  # as a job resolves it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.training(), sort_keys=False))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, ckpt)
    # an interrupted training resumes, on the first attempt and on retries
    assert jobs.stale_files(tmp_path, cfg, attempt=1) == ([], "")
    torch.save({"epoch": 3}, ckpt)
    # a finished one: a retry (after a failure past training) resumes; a new job starts afresh
    assert jobs.stale_files(tmp_path, cfg, attempt=2) == ([], "")
    assert jobs.stale_files(tmp_path, cfg, attempt=1)[0] == [ckpt]
    # a config.yaml from a vaeinf without some (default-valued) key is the same run, and so is
    # one written with other evaluation settings (an older vaeinf kept them there) or other
    # operational settings
    old = cfg.to_dict()
    del old["train"]["eps"]
    old["eval"]["nll_k"] = 7
    old["train"]["device"] = "cpu"
    old["train"]["checkpoint_every"] = 9
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert jobs.stale_files(tmp_path, cfg, attempt=2) == ([], "")
    # another training identity always starts afresh
    other = RunConfig(K=7, train=cfg.train)
    assert sorted(jobs.stale_files(tmp_path, other, attempt=2)[0]) == sorted(
        [tmp_path / "config.yaml", ckpt]
    )


def test_train_job_makes_the_evaluation_stale_and_logs_why(tmp_path):
    """A training job removes the run's model and evaluation before it trains (an interrupted
    one leaves a run Snakemake evaluates again), and its log says why it starts afresh."""
    overrides = study.run_overrides(_tiny(), "digits", "vae", 1, 0)
    overrides.pop("eval")
    overrides["train"] = overrides["train"] | {"epochs": 1}
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    run_dir.mkdir()
    for name in ("metrics.json", "samples.npz", "model.pt"):
        (run_dir / name).write_text("of a model that is trained again")
    assert jobs.train_job(str(run_dir), overrides, str(log)) == 0
    text = log.read_text()
    assert "# starting afresh: the run has not been trained before" in text
    assert f"removing {run_dir / 'metrics.json'}" in text
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "samples.npz").exists()
    assert (run_dir / "model.pt").stat().st_size > 100  # written by the training
    # the job again (forced): the finished checkpoint goes, and the log says so
    log.unlink()
    assert jobs.train_job(str(run_dir), overrides, str(log)) == 0
    assert "# starting afresh: the training is rerun (forced or changed)" in log.read_text()


def test_identity_leaves_out_evaluation_and_operational_settings():
    base = RunConfig()
    same = RunConfig(
        data_dir="elsewhere",
        train=TrainConfig(device="cpu", checkpoint_every=5, compile=True),
    )
    same.eval.nll_k, same.eval.memory_mb = 17, 3
    assert same.identity() == base.identity()
    assert same.evaluation() != base.evaluation()
    assert "memory_mb" not in base.evaluation() and "eval" not in base.identity()
    assert RunConfig(train=TrainConfig(lr=0.5)).identity() != base.identity()
    # Every method option is recorded at its value: writing a default out changes nothing.
    flow = study.resolved_run_config({"method": "flow"})
    explicit = study.resolved_run_config({"method": "flow", "method_options": {"steps": 8}})
    assert flow.method_options["steps"] == 8 and flow.identity() == explicit.identity()


def test_tables_and_variables_from_a_summary():
    import pandas as pd

    rows = [
        {
            "dataset": "digits",
            "method": m,
            "K": k,
            "seed": s,
            "test_nll.mean": 30 - k / 10 - s / 100,
            "active_units.count": 3,
            "time_per_epoch.median_s": 0.1 * k,
            "bound_gap": 1 / k,
            "collapse.kl_total": 1.0,
            "collapse.mutual_information.value": 0.5,
            "latent": 8,
            "test_nll.K": 1000,
        }  # fmt: skip
        for m in ("vae", "iwae")
        for k in (1, 5)
        for s in (0, 1)
    ]
    summary = pd.DataFrame(rows)
    assert mean_sd(pd.Series([1.0, 2.0])) == "1.50 ± 0.71"
    assert mean_sd(pd.Series([1.0])) == "1.00"
    table = pivot_table(summary, "test_nll.mean", 2, ["iwae", "vae"])
    assert table.splitlines()[0] == "| Method | K = 1 | K = 5 |"
    assert table.splitlines()[2].startswith("| iwae | 29.89 ± 0.01 | 29.49 ± 0.01 |")
    cfg = {"datasets": ["digits"], "methods": ["vae", "iwae", "flow"], "Ks": [1, 5],
           "seeds": [0, 1], "run": {}}  # fmt: skip
    # The cost rule's table: time per epoch in proportion to K, tight quartiles.
    cost = pd.DataFrame(
        [
            {
                "dataset": "digits",
                "method": m,
                "K": k,
                "batches_per_epoch": 10,
                "step_s": 0.01 * k,
                "step_s_q1": 0.0099 * k,
                "step_s_q3": 0.0101 * k,
                "epoch_s_fastest": 0.1 * k,
            }  # fmt: skip
            for m in ("vae", "iwae")
            for k in (1, 5)
        ]
    )
    v = paper_variables(summary, cfg, cost)
    assert v["study"]["spread"] == "mean ± s.d. over 2 seeds"
    assert v["result"]["worst_K"] == 1  # both methods alike: the larger K is better
    assert v["result"]["time_kmin"] == "0.100" and v["result"]["time_kmax"] == "0.500"
    assert v["result"]["time_vs_vae_kmin"] == "×1.00 for IWAE"
    assert v["study"]["n_runs"] == 12  # from the config, not the rows present
    # Claims: K's effect on the NLL, paired over the 2 seeds (the same -0.40 in both, so
    # resolved), and the cost trend from the cost table, in proportion to K.
    assert v["claim"]["likelihood"]["k_effect"].startswith("improves for VAE (by 0.40 ± 0.00 nats)")
    assert "about in proportion to K (elasticity 1.00)" in v["claim"]["cost"]["trend"]
    assert "over seeds [0, 1]" in v["basis"]["likelihood"]["k_effect"]
    yaml.safe_dump(v)  # plain Python types only


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def changed_plan(tree: Path, change: dict) -> dict[str, int]:
    """The jobs a dry run plans for the tiny study with ``change`` merged into its config."""
    cfg = merge(yaml.safe_load((tree / TINY).read_text()), change)
    (tree / "tests/config/changed.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake(
        tree, "--dry-run", "--quiet", "rules", "--configfile", "tests/config/changed.yaml"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return job_stats(r.stdout + r.stderr)


def identity_dry_runs(tree: Path) -> None:
    """Dry runs of a finished tiny study (5 runs: vae, iwae x K 1, 5 and iwae-dreg at K 5) with
    one setting changed."""
    plan = changed_plan(tree, {"run": {"eval": {"nll_k": 60}}})
    assert "train" not in plan and "cost" not in plan and plan["evaluate"] == 5, plan
    operational = {"train": {"checkpoint_every": 2}, "eval": {"memory_mb": 32}, "data_dir": "d"}
    plan = changed_plan(tree, {"run": operational})
    assert not {"train", "evaluate", "cost"} & set(plan), plan
    # The device is operational for the runs; its kind is part of what the cost rule measures.
    plan = changed_plan(tree, {"run": {"train": {"device": "auto"}}})
    assert not {"train", "evaluate"} & set(plan) and plan["cost"] == 1, plan
    plan = changed_plan(tree, {"run": {"train": {"lr": 2e-3}}})  # the default is 1e-3
    assert plan["train"] == 5 and plan["evaluate"] == 5 and "cost" not in plan, plan
    # A method's overrides reach its variants too (they are merged under the variant's).
    plan = changed_plan(tree, {"method_overrides": {"iwae": {"train": {"lr": 2e-3}}}})
    assert plan["train"] == 3 and plan["evaluate"] == 3 and "cost" not in plan, plan
    # One variant's overrides retrain only its runs.
    plan = changed_plan(tree, {"variants": {"iwae-dreg": {"train": {"lr": 2e-3}}}})
    assert plan["train"] == 1 and plan["evaluate"] == 1 and "cost" not in plan, plan
    # A new label renames it in the tables, figures and text, and reruns no run.
    plan = changed_plan(tree, {"variants": {"iwae-dreg": {"label": "DReG"}}})
    assert not {"train", "evaluate", "cost"} & set(plan) and plan["table"] >= 1, plan
    plan = changed_plan(tree, {"run": {"model": {"hidden": [12]}}})
    assert plan["train"] == 5 and plan["cost"] == 1, plan


def test_end_to_end_tiny_study(tmp_path):
    """Every rule on the tiny config; then one run alone, forced, and a rebuild from raw runs.
    The tree has its own copy of vaeinf, so that a module can be edited as a user would."""
    tree = make_tree(tmp_path)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    tiny = ("--configfile", TINY)  # last: --configfile takes every argument after it

    # As `make study` runs it: under the job server (the other tests run plain Snakemake).
    r = snakemake(tree, "--cores", "2", *tiny, served=True)
    assert r.returncode == 0, r.stderr[-4000:]
    # tiny.yaml: 2 methods x 2 Ks and one ablation at K = 5; paper.render false
    assert job_stats(r.stderr) == expected(5, preview=False)
    served = ("vae/k1/seed0/train.log", "iwae/k5/seed0/evaluate.log", "cost.log")
    for log in served:
        assert jobserver.read_usage(tree / "logs/digits" / log), log  # served, usage recorded
    summary = tree / "results/summary.csv"
    assert len(summary.read_text().splitlines()) == 1 + 5
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (tree / f"paper/_generated/figures/{name}.{ext}").stat().st_size > 1000
    for name in TABLES:
        assert (tree / f"paper/_generated/tables/{name}.md").read_text().startswith("| ")
    variables = yaml.safe_load((tree / "paper/_variables.yml").read_text())
    assert variables["study"]["n_runs"] == 5
    # The ablation: its own row in every table, under its display name, and in the Ablations
    # section against its base.
    for name in ("nll", "time", "collapse", "ablations"):
        table = (tree / f"paper/_generated/tables/{name}.md").read_text()
        assert "| IWAE (DReG) |" in table and "iwae-dreg" not in table, name
    assert "IWAE (DReG)" in variables["claim"]["ablations"]["nll"]
    assert "estimator `dreg`" in (tree / "paper/_generated/setup.md").read_text()
    assert variables["result"]["worst_method"] in ("VAE", "IWAE")
    report = (tree / "paper/_generated/manuscript-check.txt").read_text()
    assert report.startswith("manuscript check: OK")
    if not HAS_QUARTO:
        assert "Rendering the paper (HTML and PDF) needs Quarto" in r.stderr
    for name in ("train.tsv", "evaluate.tsv"):
        assert (tree / "benchmarks/digits/iwae/k5/seed0" / name).exists()
    metrics = tree.glob("results/*/*/k*/seed*/metrics.json")
    runs = [json.loads(p.read_text())["metrics"] for p in metrics]
    assert len(runs) == 5 and len({m["test_set"]["sha256"] for m in runs}) == 1  # one test set
    # The gradient's SNR of every run: the training's three stages, the grid of K, the slopes.
    for m in runs:
        assert list(m["snr"]["training"]) == ["start", "middle", "end"]
        assert [g["K"] for g in m["snr"]["grid"]] == [1, 5, 20]
        assert set(m["snr"]["slope"]) == {"encoder", "decoder"}
    snr = pd.read_csv(tree / "results/snr.csv")
    assert len(snr) == 5 * (3 + 3) * 2  # runs x (stages + grid K) x parts
    assert {(m["variant"], m["method"]) for m in runs if m["variant"] != m["method"]} == {
        ("iwae-dreg", "iwae")
    }
    assert {m["ais"]["n"] for m in runs} == {min(50, m["test_set"]["n"]) for m in runs}
    cost = pd.read_csv(tree / "results/cost.csv")
    assert len(cost) == 5 and (cost["epoch_s_fastest"] > 0).all()
    provenance = (tree / "paper/_generated/provenance.md").read_text()
    assert "| train | 5 |" in provenance and "| evaluate | 5 |" in provenance
    interactive = tree / "paper/_generated/figures/bound_and_time_vs_k.html"
    assert 'id="bound-and-time"' in interactive.read_text()

    # The preview without Quarto, on demand (the default target renders it when paper.render is
    # auto and Quarto is missing): every figure, the NLL table's numbers, no unresolved reference.
    r = snakemake(tree, "--cores", "2", "preview", *tiny)
    assert r.returncode == 0, r.stderr[-4000:]
    assert job_stats(r.stderr) == {"preview": 1, "total": 1}
    if not HAS_QUARTO:
        assert "rendered as a preview without it" in r.stderr
        assert "paper/_output/preview.pdf" in r.stderr
    pypdf = pytest.importorskip("pypdf")
    pdf = pypdf.PdfReader(tree / "paper/_output/preview.pdf")
    assert sum(len(page.images) for page in pdf.pages) == len(FIGURES)
    text = re.sub(r"\s+", " ", " ".join(page.extract_text() for page in pdf.pages))
    for bad in ("{{<", "??", "@fig-", "@tbl-", "@eq-", "@sec-"):
        assert bad not in text
    nll = (tree / "paper/_generated/tables/nll.md").read_text()
    assert all(n in text for n in re.findall(r"\d+\.\d\d", nll))
    html = (tree / "paper/_output/preview.html").read_text()
    assert html.count('id="bound-and-time"') == 1 and "Preview rendered without Quarto" in html
    for name in ("train.log", "evaluate.log"):
        assert (tree / "logs/digits/iwae/k5/seed0" / name).exists()

    # One run alone: built already, so a second call does nothing ...
    target = f"{RUN}/metrics.json"
    r = snakemake(tree, "--cores", "2", target, *tiny)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Nothing to be done" in r.stdout + r.stderr
    # The README's safe forms of a forced retraining, dry runs on the finished study: one run
    # (the target first, or after '--'), one run with everything downstream, one method's runs,
    # every training; and the trap they avoid: a target after '--forcerun train' is forced too.
    one_run = {"train": 1, "evaluate": 1, "total": 2}
    assert planned(tree, target, "--forcerun", "train", *tiny) == one_run
    assert planned(tree, *tiny, "--forcerun", "train", "--", target) == one_run
    tiny_jobs = expected(5, preview=False)
    downstream = {k: v for k, v in tiny_jobs.items() if k not in ("cost", "setup")}
    plan = planned(tree, "--forcerun", f"{RUN}/model.pt", *tiny)
    one_run_downstream = downstream | {"train": 1, "evaluate": 1}
    one_run_downstream["total"] = sum(v for k, v in one_run_downstream.items() if k != "total")
    assert plan == one_run_downstream
    models = sorted(str(p.relative_to(tree)) for p in tree.glob("results/digits/iwae/*/*/model.pt"))
    plan = planned(tree, "--forcerun", *models, *tiny)
    assert plan["train"] == 2 and plan["evaluate"] == 2 and "cost" not in plan, plan
    assert planned(tree, "--forcerun", "train", *tiny)["train"] == 5
    assert planned(tree, *tiny, "--forcerun", "train", target)["train"] == 5  # the trap

    # ... and forcing it reruns that run's training and evaluation, nothing else.
    old = json.loads((tree / target).read_text())["provenance"]["wall_seconds"]["total"]
    r = snakemake(tree, "--cores", "2", target, "--forcerun", "train", *tiny)
    assert r.returncode == 0, r.stderr[-4000:]
    assert job_stats(r.stderr) == one_run
    log = (tree / "logs/digits/iwae/k5/seed0/train.log").read_text()
    assert "# starting afresh: the training is rerun (forced or changed)" in log
    new = json.loads((tree / target).read_text())["provenance"]["wall_seconds"]["total"]
    assert new != old

    # Paper from raw runs: without the aggregates and figures, a rerun rebuilds them (and picks
    # up the rerun run) without training or evaluating anything.
    for name in ("summary", "bounds", "per_dim"):
        (tree / f"results/{name}.csv").unlink()
    shutil.rmtree(tree / "paper/_generated")
    (tree / "paper/_variables.yml").unlink()
    r = snakemake(tree, "--cores", "2", *tiny)
    assert r.returncode == 0, r.stderr[-4000:]
    stats = job_stats(r.stderr)
    assert "train" not in stats and "evaluate" not in stats
    rerun = {k: v for k, v in tiny_jobs.items() if k not in ("train", "evaluate", "cost")}
    assert stats == rerun | {"total": sum(v for k, v in rerun.items() if k != "total")}
    assert (tree / "paper/_generated/manuscript-check.txt").exists()

    s = pd.read_csv(summary)
    row = s[(s["variant"] == "iwae") & (s["K"] == 5)]
    assert row["provenance.wall_seconds.total"].iloc[0] == pytest.approx(new, rel=1e-5)

    # What reruns what: a changed evaluation setting re-evaluates every run and retrains none;
    # an operational one reruns nothing; a training setting retrains every run; one method's
    # overrides retrain only that method's runs. The cost rule reruns for none of them.
    identity_dry_runs(tree)

    # A cosmetic edit of one figure's module redraws that figure only (and what reads it).
    module = tree / "src/vaeinf/report/figures/nll_vs_k.py"
    text, stat = module.read_text(), module.stat()
    module.write_text(text + "# a cosmetic edit\n")
    assert planned(tree, *tiny) == {"figure": 1, "check_manuscript": 1, "all": 1, "total": 3}
    module.write_text(text)
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # undone, as if never edited

    # Rewording a claim rebuilds the paper's variables and what reads them, never the tidy
    # tables, the tables or the figures.
    for name in ("claims", "variables"):
        module = tree / f"src/vaeinf/report/{name}.py"
        module.write_text(module.read_text() + "# a reworded claim\n")
    assert planned(tree, *tiny) == {"variables": 1, "check_manuscript": 1, "all": 1, "total": 3}

    # Snakemake's report: one self-contained HTML page with the run table and every figure and
    # table of the paper, each captioned and in its section's category.
    r = snakemake(tree, "--report", "report.html", *tiny)
    assert r.returncode == 0, r.stderr[-4000:]
    html = (tree / "report.html").read_text()
    assert html.count("data:image/png") >= len(FIGURES)
    for name in FIGURES:
        assert f"paper/_generated/figures/{name}.png" in html
    for name in TABLES:
        assert f"paper/_generated/tables/{name}.html" in html
        assert (tree / f"paper/_generated/tables/{name}.html").read_text().count("<tr>") > 1
    assert "results/summary.csv" in html and "paper/_generated/figures/gaps.png" in html
    for text in ("Test NLL against the number of training samples K", "Likelihood", "Samples"):
        assert text in html


@pytest.mark.slow
def test_interrupted_forced_retraining_resumes(tmp_path):
    """Ctrl-C (SIGINT to Snakemake's process group, as a terminal sends it) during a forced
    retraining: the run is left without model and evaluation, so a plain rerun resumes its
    training from the checkpoint and evaluates it again, and the aggregate refuses the run's
    old metrics.json beside no model.pt."""
    import signal
    import time

    from vaeinf.errors import DataError
    from vaeinf.report import tidy

    (tmp_path / "tree").mkdir()
    tree = make_tree(tmp_path / "tree")
    one = merge(
        yaml.safe_load((tree / TINY).read_text()),
        {"methods": ["vae"], "Ks": [1], "run": {"train": {"epochs": 60}}},
    )
    one["variants"] = {}
    (tree / "tests/config/one.yaml").write_text(yaml.safe_dump(one))
    config = ("--configfile", "tests/config/one.yaml")
    run = tree / "results/digits/vae/k1/seed0"
    log = tree / "logs/digits/vae/k1/seed0/train.log"
    r = snakemake(tree, "--cores", "2", *config)
    assert r.returncode == 0, r.stderr[-4000:]
    old_metrics = (run / "metrics.json").read_text()

    env = {k: v for k, v in os.environ.items() if k != "VAEINF_BINARIZED_MNIST_NPZ"}
    env["PATH"] = os.pathsep.join([*map(str, _STUB), str(BIN), env.get("PATH", "")])
    target = "results/digits/vae/k1/seed0/metrics.json"
    log.unlink()  # the first training's, which logged its epochs too
    with open(tmp_path / "forced.out", "w") as out:
        proc = subprocess.Popen(
            [str(SNAKEMAKE), "--cores", "2", "--forceall", target, *config],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not (log.exists() and "epoch 1/60" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "no epoch logged"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    forced = (tmp_path / "forced.out").read_text()
    print(f"--- forced, then SIGINT:\n{forced}\n--- {log.name}:\n{log.read_text()}")
    assert (run / "checkpoint.pt").exists()
    for name in ("model.pt", "metrics.json", "samples.npz"):
        assert not (run / name).exists(), (name, forced)

    # The old evaluation beside the interrupted run: the aggregate refuses it, naming the run.
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "metrics.json").write_text(old_metrics)
    with pytest.raises(DataError, match=re.escape(f"{copy} (no model.pt)")):
        tidy.check_runs([copy / "metrics.json"])

    # A plain rerun plans the run's training and evaluation and what reads them, nothing else ...
    plan = planned(tree, *config)
    assert plan["train"] == 1 and plan["evaluate"] == 1 and plan["aggregate"] == 1, plan
    assert not {"cost", "setup"} & set(plan), plan
    r = snakemake(tree, "--cores", "2", *config)
    assert r.returncode == 0, r.stderr[-4000:]
    assert job_stats(r.stderr) == plan
    # ... and the training resumes from its checkpoint and says so in its log.
    text = log.read_text()
    print(f"--- plain rerun:\n{r.stderr}\n--- {log.name}:\n{text}")
    m = re.search(r"resuming from \S+checkpoint\.pt: epoch (\d+) batch (\d+)", text)
    assert m and 1 <= int(m[1]) < 60, text
    assert "starting afresh" not in text
    summary = pd.read_csv(tree / "results/summary.csv")
    assert len(summary) == 1 and (run / "metrics.json").read_text() != old_metrics
    assert tidy.disagreement(run / "metrics.json") is None
