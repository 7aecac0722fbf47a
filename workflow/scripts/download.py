"""Snakemake job: download and verify one dataset (vaeinf.study.snakemake_download)."""

from vaeinf.study import snakemake_download

snakemake_download(snakemake)  # noqa: F821
