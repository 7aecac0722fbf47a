# vaeinf: the study of inference in variational autoencoders, from raw runs to the paper.
#
#   snakemake --cores all                  the default study (config/config.yaml) on this machine
#   snakemake --profile slurm              the same on a Slurm cluster (profiles/slurm/)
#   snakemake --cores all --configfile config/mnist.yaml    the full MNIST study
#
# Results-path convention (one run = one target, so one run can be rebuilt alone):
#
#   results/{dataset}/{variant}/k{K}/seed{seed}/  config.yaml, eval.yaml, checkpoint.pt,
#                                                 train_log.csv, train_snr.json, model.pt,
#                                                 metrics.json, samples.npz (names: vaeinf.rundir)
#   logs/{dataset}/{variant}/k{K}/seed{seed}/     train.log, evaluate.log
#   benchmarks/{dataset}/{variant}/k{K}/seed{seed}/  train.tsv, evaluate.tsv
#
# {variant} is a method (each of `methods` is a variant of itself) or a named ablation of
# `variants` (a base method with run config overrides; vaeinf.study.grid).
#   results/summary.csv, bounds.csv, per_dim.csv, per_point.csv, curves.csv, snr.csv
#                                                 every run's metrics, tidy (rule aggregate)
#   paper/_generated/{tables,figures}/, paper/_generated/setup.md, paper/_variables.yml
#   paper/_output/index.{html,pdf}                the rendered paper (rule paper, needs Quarto)
#   paper/_output/preview.{html,pdf}              without Quarto: a preview (rule preview)
#
# Wildcards are constrained to vaeinf's datasets and the study's variants; K and seed are integers.
# Stages live in workflow/rules/, input functions in workflow/rules/common.smk, all logic in
# src/vaeinf (study/ for the grid and the jobs, report/ for tables, figures and the paper).


from snakemake.utils import validate

# The default study; a --configfile replaces it (no key of the default leaks into another study).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


# snakemake --report report.html: the run table and the paper's tables and figures, captioned.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/cost.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/paper.smk"


rule all:
    default_target: True
    input:
        get_final_targets(),
