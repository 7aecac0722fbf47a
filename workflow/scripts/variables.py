"""Snakemake job: the numbers and claims the paper quotes, paper/_variables.yml
(vaeinf.report.variables, vaeinf.report.claims)."""

from vaeinf.report.variables import write_variables
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    write_variables(
        smk.input.summary,
        dict(smk.params.study),
        smk.output.variables,
        smk.input.cost,
        smk.input.curves,
        smk.input.per_point,
    )
