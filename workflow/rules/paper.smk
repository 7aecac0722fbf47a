# The paper: the generated setup section, the manuscript check (no Quarto needed) and the
# rendering with Quarto (HTML, and PDF through Typst). Without Quarto the default target stops
# after the check and says how to get Quarto; `snakemake paper` then renders on demand.


localrules:
    setup,
    check_manuscript,
    paper,


rule setup:
    input:
        code=library("manuscript"),
    output:
        setup=f"{GEN}/setup.md",
    log:
        "logs/setup.log",
    conda:
        CONDA_ENV
    params:
        study={k: config[k] for k in ("datasets", "methods", "Ks", "seeds", "run")}
        | {"method_overrides": config["method_overrides"]},
    script:
        "../scripts/setup.py"


rule check_manuscript:
    input:
        unpack(get_paper_inputs),
        qmd="paper/index.qmd",
        quarto="paper/_quarto.yml",
        bib="paper/references.bib",
        code=library("manuscript"),
    output:
        report=f"{GEN}/manuscript-check.txt",
    log:
        "logs/check_manuscript.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/check_manuscript.py"


rule paper:
    input:
        unpack(get_paper_inputs),
        check=f"{GEN}/manuscript-check.txt",
        qmd="paper/index.qmd",
        quarto="paper/_quarto.yml",
        bib="paper/references.bib",
    output:
        html="paper/_output/index.html",
        pdf="paper/_output/index.pdf",
    log:
        "logs/paper.log",
    conda:
        CONDA_ENV
    shell:
        "if ! command -v quarto > /dev/null; then "
        "echo 'vaeinf: rendering the paper needs Quarto, which is not on PATH; install it "
        "(https://quarto.org/docs/get-started/, or conda env create -f environment.yml) and "
        "rerun. Every input of the paper is built and checked.' | tee {log} >&2; exit 1; fi; "
        "quarto render paper > {log} 2>&1"


onsuccess:
    quarto_note()
