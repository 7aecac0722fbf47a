"""Snakemake job: download and verify one dataset (vaeinf.study.jobs.snakemake_download)."""

from vaeinf.study.jobs import snakemake_download

snakemake_download(snakemake)  # noqa: F821
