"""Snakemake job: evaluate one run (vaeinf.study.jobs.snakemake_evaluate); exits with vaeinf's
status."""

import sys

from vaeinf.study.jobs import snakemake_evaluate

sys.exit(snakemake_evaluate(snakemake))  # noqa: F821
