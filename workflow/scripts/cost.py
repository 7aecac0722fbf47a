"""Snakemake job: seconds per epoch of every (variant, K) of one dataset (vaeinf.study.cost)."""

from vaeinf.study.cost import measure, write_cost
from vaeinf.study.grid import data_dir
from vaeinf.study.jobs import job_log

smk = snakemake  # noqa: F821
with job_log(smk):
    # The data folder is operational: read from the study config, no part of the identity.
    where = {"data_dir": data_dir(smk.config)}
    contenders = {(v, int(k)): run | where for (v, k), run in smk.params.contenders}
    rows = measure(contenders, threads=smk.params.threads, **smk.params.settings)
    write_cost(rows, smk.output.cost)
    for r in rows:
        print(f"{r['variant']} K={r['K']}: {r['epoch_s_fastest']:.4f} s/epoch (x{r['ratio']:.2f})")
