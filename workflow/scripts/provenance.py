"""Snakemake job: the paper's provenance appendix (vaeinf.report.provenance.write_provenance)."""

from vaeinf.report.provenance import write_provenance
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    write_provenance(
        smk.input.metrics, smk.params.benchmarks, dict(smk.params.study), smk.output.provenance
    )
