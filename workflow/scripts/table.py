"""Snakemake job: one of the paper's Markdown tables (vaeinf.report.tables.write_table)."""

from vaeinf.report.tables import write_table
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    write_table(
        smk.wildcards.table,
        dict(smk.input.items()),
        smk.output.table,
        variants=smk.params.variants,
        labels=smk.params.labels,
        html=smk.output.html,
    )
