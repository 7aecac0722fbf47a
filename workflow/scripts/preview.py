"""Snakemake job: the paper rendered without Quarto, HTML and PDF
(vaeinf.report.paper.preview.render)."""

from pathlib import Path

from vaeinf.report.paper.preview import render
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    render(Path(smk.input.qmd).parent, smk.output.html, smk.output.pdf, smk.input.lua)
    print(f"preview: {smk.output.html}, {smk.output.pdf}")
