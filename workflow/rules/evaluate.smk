# Evaluation: one job per trained run; metrics.json is the one result file a run is known by.


rule evaluate:
    input:
        model=f"{RUN}/model.pt",
        train_log=f"{RUN}/train_log.csv",
    output:
        metrics=f"{RUN}/metrics.json",
        samples=f"{RUN}/samples.npz",
    log:
        f"{LOG}/evaluate.log",
    benchmark:
        f"{BENCH}/evaluate.tsv"
    conda:
        CONDA_ENV
    threads: resource("evaluate", "cpus_per_task")
    resources:
        gpu=resource("evaluate", "gpu"),
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
        cpus_per_task=resource("evaluate", "cpus_per_task"),
    params:
        run=lambda wildcards, input: os.path.dirname(input.model),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        "vaeinf evaluate --run {params.run} > {log} 2>&1"
