# Shared definitions: the study's grid, wildcard constraints and the input functions (get_*).
# The logic lives in src/vaeinf/study.py; this file only adapts it to Snakemake.

import functools
import importlib.util
import os
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.exceptions import WorkflowError

from vaeinf import rundir
from vaeinf.study import grid as study
from vaeinf.core.downloads import DOWNLOADS
from vaeinf.report.figures import INPUTS as FIGURE_INPUTS
from vaeinf.names import DATASETS
from vaeinf.report.tables import INPUTS as TABLE_INPUTS
from vaeinf.report.tables import TABLES

# Job commands (vaeinf, python) come from the environment that runs Snakemake, also when it is
# started as .venv/bin/snakemake without activating that environment.
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)

# The software of every job: the project's environment (see README; no --use-conda needed).
CONDA_ENV = "../../environment.yml"

# Stop before any job when the study's run configs are not valid for vaeinf (or a config file
# gives a key twice, which Snakemake's own reader lets pass, keeping the last).
try:
    for configfile_path in workflow.configfiles:
        study.load_study(configfile_path)
    study.check_study(config, source="config")
except study.StudyError as e:
    raise WorkflowError(str(e)) from None

RUNS = study.runs(config)
# The study's variants in order (its methods, then its named variants), and their display names.
VARIANTS = list(study.variants(config))
LABELS = study.labels(config)
# The study config as the paper describes it: without operational settings.
STUDY = study.without_operational(config)
RUN = rundir.RUN_DIR
LOG = f"logs/{rundir.RUN_PATH}"
BENCH = f"benchmarks/{rundir.RUN_PATH}"
GEN = "paper/_generated"
PREVIEW = {"html": "paper/_output/preview.html", "pdf": "paper/_output/preview.pdf"}
DATA_DIR = study.data_dir(config)
DOWNLOADABLE = sorted(d for d, files in DOWNLOADS.items() if files)


wildcard_constraints:
    dataset="|".join(sorted(DATASETS)),
    variant="|".join(re.escape(v) for v in VARIANTS),
    K=r"[1-9][0-9]*",
    seed=r"[0-9]+",
    figure="|".join(FIGURE_INPUTS),
    table="|".join(TABLES),


#: The paper's section of each table and figure: their category in Snakemake's report.
REPORT_SECTIONS = {
    "nll": "Likelihood",
    "nll_vs_k": "Likelihood",
    "gaps": "Where the inference gap lies",
    "bound_gap": "Tightness of the bound",
    "time": "Cost",
    "bound_and_time_vs_k": "Cost",
    "bound_vs_compute": "Likelihood against compute",
    "active_units_vs_k": "Latent usage and posterior collapse",
    "kl_per_dim": "Latent usage and posterior collapse",
    "collapse": "Latent usage and posterior collapse",
    "reconstructions": "Samples",
    "prior_samples": "Samples",
    "snr": "Are tighter bounds better?",
    "snr_vs_k": "Are tighter bounds better?",
}


def report_section(wildcard):
    """The report category of a table or figure job: its section of the paper."""
    return lambda wildcards: REPORT_SECTIONS.get(
        getattr(wildcards, wildcard), "Results"
    )


def canonical(value):
    """A config value with every mapping's keys sorted: Snakemake compares params as text, so
    a study config whose keys are merely reordered must give the same params."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def library(*modules):
    """The source files of vaeinf.<module>: inputs of the rules whose logic they hold, so that
    editing one reruns them (they are never inputs of training or evaluation)."""
    return [importlib.util.find_spec(f"vaeinf.{m}").origin for m in modules]


def quarto_available():
    return shutil.which("quarto") is not None


def render_paper():
    """Whether the default target renders the paper (config paper.render, 'auto': if Quarto)."""
    render = config["paper"]["render"]
    return quarto_available() if render == "auto" else bool(render)


def resource(job, key):
    """A resource of the train or evaluate job, from config key resources.<job>.<key>."""
    return config["resources"][job][key]


def run_files(pattern, runs=None):
    """An output pattern of a per-run rule, filled in for every run of the grid (or `runs`)."""
    return [pattern.format(**asdict(r)) for r in (RUNS if runs is None else runs)]


def get_data_files(wildcards):
    return study.data_files(config, wildcards.dataset)


def _run_key(wildcards):
    return tuple(getattr(wildcards, k) for k in rundir.GRID_KEYS)


@functools.cache
def run_config(dataset, variant, K, seed):
    """The resolved RunConfig of one run (defaults filled in, every method option included)."""
    return study.run_config(config, dataset, variant, int(K), int(seed))


def get_train_identity(wildcards):
    """What determines the trained model (RunConfig.identity): the train rule's params, so
    that changing it, and nothing else, retrains the run."""
    return run_config(*_run_key(wildcards)).identity()


def get_eval_settings(wildcards):
    """The evaluation settings (RunConfig.evaluation): the evaluate rule's params, so that
    changing them re-evaluates the run and never retrains it."""
    return run_config(*_run_key(wildcards)).evaluation()


def get_cost_contenders(wildcards):
    """(variant, K) -> run config of every contender of the cost rule, as a list of pairs
    (params must be plain values), sorted: the order of the study config's keys changes no
    contender, so it must not rerun the rule (the rounds rotate the order anyway)."""
    from vaeinf.study.cost import study_contenders

    contenders = study_contenders(config, wildcards.dataset)
    return [[list(k), canonical(contenders[k])] for k in sorted(contenders)]


def get_all_costs(wildcards):
    return expand(rules.cost.output.cost, dataset=config["datasets"])


def get_all_metrics(wildcards):
    return run_files(rules.evaluate.output.metrics)


def sample_K():
    return config["paper"]["sample_K"] or max(config["Ks"])


def get_sample_runs():
    """The first seed's run of every variant at the sample K, or at the variant's largest K
    when it is not run at the sample K."""
    k, seed, table = sample_K(), config["seeds"][0], study.variants(config)

    def shown(variant):
        ks = table[variant]["Ks"]
        return k if k in ks else max(ks)

    return [r for r in RUNS if r.seed == seed and r.K == shown(r.variant)]


def get_figure_n_images(wildcards):
    """Images per method of an image figure; None for the others, so that changing it redraws
    only the figures that show images."""
    if "samples" in FIGURE_INPUTS[wildcards.figure]:
        return config["paper"]["n_images"]
    return None


def get_figure_inputs(wildcards):
    """The figure's own module and the shared style (so a cosmetic edit of one figure redraws
    only it), and what it is drawn from: a table of the aggregate rule or the runs' samples.
    """
    inputs = {
        "code": library(f"report.figures.{wildcards.figure}", "report.figures.style")
    }
    for kind in FIGURE_INPUTS[wildcards.figure]:
        if kind == "samples":
            inputs["samples"] = run_files(
                rules.evaluate.output.samples, get_sample_runs()
            )
        else:
            inputs[kind] = getattr(rules.aggregate.output, kind)
    return inputs


def get_table_inputs(wildcards):
    """The table's own module and the shared formatting, and the aggregate tables it reads."""
    inputs = {
        "code": library(f"report.tables.{wildcards.table}", "report.tables.format")
    }
    for kind in TABLE_INPUTS[wildcards.table]:
        inputs[kind] = getattr(rules.aggregate.output, kind)
    return inputs


def get_paper_inputs(wildcards=None):
    """Every generated input of the paper (tables, figures, setup, appendix, variables)."""
    return {
        "tables": expand(rules.table.output.table, table=TABLES),
        "figures": expand(rules.figure.output.png, figure=FIGURE_INPUTS),
        "interactive": rules.bound_and_time_html.output.html,
        "setup": rules.setup.output.setup,
        "provenance": rules.provenance.output.provenance,
        "variables": rules.variables.output.variables,
    }


def get_final_targets():
    """The default target. Every run's metrics.json is part of it: a training job removes its
    run's evaluation first, and Snakemake reruns a missing file only for a job that needs it,
    so after an interrupted or failed training a plain `snakemake` trains (resuming) and
    evaluates that run again, and rebuilds what reads it."""
    targets = [
        *get_all_metrics(None),
        rules.aggregate.output.summary,
        *expand(rules.figure.output.pdf, figure=FIGURE_INPUTS),
        rules.check_manuscript.output.report,
    ]
    if render_paper():
        targets += [rules.paper.output.html, rules.paper.output.pdf]
    elif config["paper"]["render"] == "auto":
        targets += [
            rules.preview.output.html,
            rules.preview.output.pdf,
        ]  # without Quarto
    return targets


def _newer(paths, than):
    return any(p.exists() and p.stat().st_mtime > than.stat().st_mtime for p in paths)


def quarto_note():
    """After a successful run whose paper inputs are built and checked, when Quarto is missing:
    name the preview rendered without it (or how to render one), and say how to get Quarto.
    """
    check = Path(rules.check_manuscript.output.report)
    if quarto_available() or not check.exists():
        return
    inputs = [
        Path(rules.aggregate.output.summary),
        Path(rules.variables.output.variables),
        *map(Path, expand(rules.figure.output.pdf, figure=FIGURE_INPUTS)),
    ]
    if _newer(inputs, check):
        return  # the check is older than the inputs: this run did not build the paper's inputs
    preview = [Path(p) for p in PREVIEW.values()]
    if all(p.exists() and not _newer([check], p) for p in preview):
        done = (
            "Quarto is not on PATH, so the paper was rendered as a preview without it:\n  "
            + "\n  ".join(map(str, preview))
            + "\n"
        )
    else:
        done = "Preview without Quarto (HTML and PDF): snakemake --cores all preview\n"
    print(
        "\nvaeinf: every input of the paper is built and the manuscript check passed "
        f"({check}).\n"
        + done
        + "Rendering the paper (HTML and PDF) needs Quarto, which is "
        "not on PATH: install it from\nhttps://quarto.org/docs/get-started/ or use the conda "
        "environment\n(conda env create -f environment.yml), then run: "
        "snakemake --cores all paper",
        file=sys.stderr,
    )
