"""Snakemake job: one figure as PNG and PDF (vaeinf.report.figures.make_figure)."""

from vaeinf.report.figures import make_figure
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    make_figure(
        smk.wildcards.figure,
        dict(smk.input.items()),
        smk.output.png,
        smk.output.pdf,
        variants=smk.params.variants,
        labels=smk.params.labels,
        n_images=smk.params.n_images,
    )
