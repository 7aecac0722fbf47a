# Cost: one job per dataset that times the training step of every (method, K) of the grid, each
# in its own worker process, in rotating rounds (vaeinf.study.cost). The cost table, the
# bound-and-time figure and the paper's cost numbers read its output; the training logs keep
# their own epoch times as a record. Locally it takes every core, so no training job runs beside it and times it.


rule cost:
    output:
        cost="results/{dataset}/cost.csv",
    log:
        "logs/{dataset}/cost.log",
    benchmark:
        "benchmarks/{dataset}/cost.tsv"
    conda:
        CONDA_ENV
    # Every core of a local run (none is left for a job beside it); the job's own CPUs on a
    # cluster, where no --cores is given.
    threads: workflow.resource_settings.cores or resource("cost", "cpus_per_task")
    resources:
        gpu=resource("cost", "gpu"),
        mem_mb=resource("cost", "mem_mb"),
        runtime=resource("cost", "runtime"),
        cpus_per_task=resource("cost", "cpus_per_task"),
    params:
        contenders=get_cost_contenders,
        settings=canonical(config["cost"]),
        threads=resource("train", "cpus_per_task"),
    script:
        "../scripts/cost.py"
