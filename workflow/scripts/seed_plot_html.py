"""Snakemake job: the interactive seed plot for the HTML paper
(vaeinf.report.figures.interactive)."""

import pandas as pd

from vaeinf.report.figures.interactive import seed_plot_html
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    cost = pd.read_csv(smk.input.cost) if "cost" in smk.input.keys() else None
    seed_plot_html(
        pd.read_csv(smk.input.summary), cost, smk.output.html, methods=smk.params.methods
    )
