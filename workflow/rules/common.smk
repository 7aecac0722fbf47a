# Shared definitions: the study's grid, wildcard constraints and the input functions (get_*).
# The logic lives in src/vaeinf/study.py; this file only adapts it to Snakemake.

import importlib.util
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.exceptions import WorkflowError

from vaeinf import study
from vaeinf.downloads import DOWNLOADS
from vaeinf.figures import INPUTS as FIGURE_INPUTS
from vaeinf.names import DATASETS, METHODS
from vaeinf.tables import TABLES

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
RUN = study.RUN_DIR
LOG = f"logs/{study.RUN_PATH}"
BENCH = f"benchmarks/{study.RUN_PATH}"
GEN = "paper/_generated"
DATA_DIR = study.data_dir(config)
DOWNLOADABLE = sorted(d for d, files in DOWNLOADS.items() if files)


wildcard_constraints:
    dataset="|".join(sorted(DATASETS)),
    method="|".join(sorted(METHODS)),
    K=r"[1-9][0-9]*",
    seed=r"[0-9]+",
    figure="|".join(FIGURE_INPUTS),
    table="|".join(TABLES),


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


def get_run_config(wildcards):
    return study.run_overrides(
        config,
        wildcards.dataset,
        wildcards.method,
        int(wildcards.K),
        int(wildcards.seed),
    )


def get_all_metrics(wildcards):
    return run_files(rules.evaluate.output.metrics)


def sample_K():
    return config["paper"]["sample_K"] or max(config["Ks"])


def get_sample_runs():
    k, seed = sample_K(), config["seeds"][0]
    return [r for r in study.runs(config | {"Ks": [k], "seeds": [seed]})]


def get_figure_inputs(wildcards):
    """The figure's own module and the shared style (so a cosmetic edit of one figure redraws
    only it), and what it is drawn from: a table of the aggregate rule or the runs' samples.
    """
    kind = FIGURE_INPUTS[wildcards.figure]
    inputs = {"code": library(f"figures.{wildcards.figure}", "figures.style")}
    if kind == "samples":
        inputs["samples"] = run_files(rules.evaluate.output.samples, get_sample_runs())
    else:
        inputs[kind] = getattr(rules.aggregate.output, kind)
    return inputs


def get_table_code(wildcards):
    return library(f"tables.{wildcards.table}", "tables.format")


def get_paper_inputs(wildcards=None):
    """Every generated input of the paper (tables, figures, setup, variables)."""
    return {
        "tables": expand(rules.table.output.table, table=TABLES),
        "figures": expand(rules.figure.output.png, figure=FIGURE_INPUTS),
        "setup": rules.setup.output.setup,
        "variables": rules.variables.output.variables,
    }


def get_final_targets():
    targets = [
        "results/summary.csv",
        *expand(f"{GEN}/figures/{{figure}}.pdf", figure=FIGURE_INPUTS),
        f"{GEN}/manuscript-check.txt",
    ]
    if render_paper():
        targets += ["paper/_output/index.html", "paper/_output/index.pdf"]
    return targets


def quarto_note():
    """After a successful run whose paper inputs are built and checked, when Quarto is missing:
    say that rendering needs Quarto and how to get it."""
    check = Path(f"{GEN}/manuscript-check.txt")
    if quarto_available() or not check.exists():
        return
    inputs = [Path(p) for p in get_final_targets()[:-1]] + [
        Path("paper/_variables.yml")
    ]
    if any(p.exists() and p.stat().st_mtime > check.stat().st_mtime for p in inputs):
        return  # the check is older than the inputs: this run did not build the paper's inputs
    print(
        "\nvaeinf: every input of the paper is built and the manuscript check passed "
        f"({check}).\n"
        "Rendering the paper (HTML and PDF) needs Quarto, which is not on PATH: install it from\n"
        "https://quarto.org/docs/get-started/ or use the conda environment\n"
        "(conda env create -f environment.yml), then run: snakemake --cores all paper",
        file=sys.stderr,
    )
