"""Snakemake job: the tidy tables of every run's metrics (vaeinf.report.tidy.write_aggregate)."""

from vaeinf.report.tidy import write_aggregate
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    summary = write_aggregate(smk.input.metrics, smk.input.costs, **dict(smk.output.items()))
    print(f"{len(summary)} runs -> {smk.output.summary}")
