"""Snakemake job: the manuscript check, no Quarto needed (vaeinf.report.paper.check.write_check)."""

from pathlib import Path

from vaeinf.report.paper.check import write_check
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    summary = write_check(Path(smk.input.qmd).parent, smk.output.report)
    print(f"manuscript check: OK, {len(summary['cross_references'])} cross-references")
