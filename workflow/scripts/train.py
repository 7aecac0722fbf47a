"""Snakemake job: train one run (vaeinf.study.jobs.snakemake_train); exits with vaeinf's status."""

import sys

from vaeinf.study.jobs import snakemake_train

sys.exit(snakemake_train(snakemake))  # noqa: F821
