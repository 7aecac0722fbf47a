"""Snakemake job: download and verify one dataset (vaeinf.study.grid.snakemake_download)."""

from vaeinf.study.grid import snakemake_download

snakemake_download(snakemake)  # noqa: F821
