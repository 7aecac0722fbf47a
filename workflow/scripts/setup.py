"""Snakemake job: the paper's experimental setup from the config (vaeinf.report.paper.check)."""

from vaeinf.report.paper.check import write_setup
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    write_setup(dict(smk.params.study), smk.output.setup)
