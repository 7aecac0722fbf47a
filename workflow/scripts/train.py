"""Snakemake job: train one run (vaeinf.study.grid.snakemake_train); exits with vaeinf's status."""

import sys

from vaeinf.study.grid import snakemake_train

sys.exit(snakemake_train(snakemake))  # noqa: F821
