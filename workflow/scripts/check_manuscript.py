"""Snakemake job: the manuscript check, no Quarto needed (vaeinf.manuscript.write_check)."""

from pathlib import Path

from vaeinf.manuscript import write_check
from vaeinf.study import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    summary = write_check(Path(smk.input.qmd).parent, smk.output.report)
    print(f"manuscript check: OK, {len(summary['cross_references'])} cross-references")
