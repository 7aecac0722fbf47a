# Training: one job per run of the grid. The run's training identity (everything that changes
# the trained model; not the evaluation or operational settings) is a param, so changing it
# retrains exactly the runs it affects. checkpoint.pt is deliberately not an output: a retry
# after preemption (exit 143) or a failure resumes from it.


rule train:
    input:
        data=get_data_files,
    output:
        model=f"{RUN}/{rundir.MODEL}",
        train_log=f"{RUN}/{rundir.TRAIN_LOG}",
        train_snr=f"{RUN}/{rundir.TRAIN_SNR}",
    log:
        f"{LOG}/train.log",
    benchmark:
        f"{BENCH}/train.tsv"
    conda:
        CONDA_ENV
    threads: resource("train", "cpus_per_task")
    resources:
        gpu=resource("train", "gpu"),
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        cpus_per_task=resource("train", "cpus_per_task"),
        # Which attempt this is (1, then 2.. on --retries): the script keeps a finished
        # training's checkpoint only on a retry (the script object has no attempt of its own).
        attempt=lambda wildcards, attempt: attempt,
    params:
        identity=get_train_identity,
    script:
        "../scripts/train.py"
