"""Snakemake job: one of the paper's Markdown tables (vaeinf.tables.write_table)."""

from vaeinf.study import job_log
from vaeinf.tables import write_table

smk = snakemake  # noqa: F821
with job_log(smk):
    write_table(smk.wildcards.table, dict(smk.input.items()), smk.output.table, smk.params.methods)
