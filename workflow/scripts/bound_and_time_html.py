"""Snakemake job: the interactive figure of the bound and the time against K for the HTML paper
(vaeinf.report.figures.interactive)."""

import pandas as pd

from vaeinf.report.figures.interactive import bound_and_time_html
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    cost = pd.read_csv(smk.input.cost) if "cost" in smk.input.keys() else None
    bound_and_time_html(
        pd.read_csv(smk.input.summary),
        cost,
        smk.output.html,
        variants=smk.params.variants,
        labels=smk.params.labels,
    )
