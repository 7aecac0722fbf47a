# Evaluation: one job per trained run; metrics.json is the one result file a run is known by.
# The evaluation settings are its params: changing them re-evaluates every run, retrains none.


rule evaluate:
    input:
        model=rules.train.output.model,
        train_log=rules.train.output.train_log,
        train_snr=rules.train.output.train_snr,
    output:
        metrics=f"{RUN}/{rundir.METRICS}",
        samples=f"{RUN}/{rundir.SAMPLES}",
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
        eval=get_eval_settings,
    script:
        "../scripts/evaluate.py"
