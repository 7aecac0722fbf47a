# Data: the canonical files of the datasets that need a download (digits is bundled). The
# manifest lists the verified files with their SHA-256; runs on such a dataset depend on it.
# Downloads run on the submitting host (compute nodes often have no internet access).


localrules:
    download,


rule download:
    output:
        manifest=f"{DATA_DIR}/{{dataset}}.sha256",
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(DOWNLOADABLE),
    conda:
        CONDA_ENV
    script:
        "../scripts/download.py"
