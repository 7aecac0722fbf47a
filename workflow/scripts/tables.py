"""Snakemake job: the paper's Markdown tables (vaeinf.aggregate.write_tables)."""

from vaeinf.aggregate import write_tables
from vaeinf.study import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    write_tables(smk.input.summary, dict(smk.output.items()), methods=smk.params.methods)
