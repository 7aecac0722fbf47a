"""Snakemake job: seconds per epoch of every (variant, K) of one dataset
(vaeinf.study.jobs.snakemake_cost); exits with vaeinf's status."""

import sys

from vaeinf.study.jobs import snakemake_cost

sys.exit(snakemake_cost(snakemake))  # noqa: F821
