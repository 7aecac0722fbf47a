# The paper: the generated setup section, the interactive figure of the bound and the time
# against K, the provenance appendix, the manuscript check (no Quarto needed) and the rendering
# with Quarto (HTML, and PDF through Typst). Without Quarto the default target (paper.render:
# auto) renders a preview instead, with pandoc and the typst Python package (rule preview,
# vaeinf.report.paper.preview), and says so.


localrules:
    setup,
    bound_and_time_html,
    provenance,
    check_manuscript,
    paper,
    preview,


rule setup:
    input:
        code=library("report.paper.check", "report.text"),
    output:
        setup=f"{GEN}/setup.md",
    log:
        "logs/setup.log",
    conda:
        CONDA_ENV
    params:
        study=canonical(
            {
                k: STUDY[k]
                for k in (
                    "datasets",
                    "methods",
                    "method_Ks",
                    "Ks",
                    "seeds",
                    "run",
                    "method_overrides",
                    "dataset_overrides",
                    "variants",
                )
                if k in STUDY
            }
        ),
    script:
        "../scripts/setup.py"


rule bound_and_time_html:
    input:
        summary=rules.aggregate.output.summary,
        cost=rules.aggregate.output.cost,
        code=library("report.figures.interactive"),
    output:
        html=report(
            f"{GEN}/figures/bound_and_time_vs_k.html",
            caption="../report/bound_and_time_html.rst",
            category=REPORT_SECTIONS["bound_and_time_vs_k"],
            subcategory="Figures",
        ),
    log:
        "logs/figures/bound_and_time_html.log",
    conda:
        CONDA_ENV
    params:
        variants=VARIANTS,
        labels=canonical(LABELS),
    script:
        "../scripts/bound_and_time_html.py"


rule provenance:
    input:
        metrics=get_all_metrics,
        costs=get_all_costs,
        code=library("report.provenance"),
    output:
        provenance=f"{GEN}/provenance.md",
    log:
        "logs/provenance.log",
    conda:
        CONDA_ENV
    params:
        # Benchmark records are written by Snakemake, not as outputs: read, not required.
        # Every run's folder, and each dataset's folder with the cost rule's record.
        benchmarks=[
            BENCH.format(dataset=r.dataset, variant=r.variant, K=r.K, seed=r.seed)
            for r in RUNS
        ]
        + expand("benchmarks/{dataset}", dataset=config["datasets"]),
        study=canonical(STUDY),
    script:
        "../scripts/provenance.py"


rule check_manuscript:
    input:
        unpack(get_paper_inputs),
        qmd="paper/index.qmd",
        quarto="paper/_quarto.yml",
        bib="paper/references.bib",
        code=library("report.paper.check", "report.text"),
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
        check=rules.check_manuscript.output.report,
        qmd="paper/index.qmd",
        quarto="paper/_quarto.yml",
        bib="paper/references.bib",
        css="paper/paper.css",
        typ="paper/paper.typ",
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
        "rerun, or render a preview without Quarto: snakemake --cores all preview. Every input "
        "of the paper is built and checked.' | tee {log} >&2; exit 1; fi; "
        "quarto render paper > {log} 2>&1"


rule preview:
    input:
        unpack(get_paper_inputs),
        check=rules.check_manuscript.output.report,
        qmd="paper/index.qmd",
        quarto="paper/_quarto.yml",
        bib="paper/references.bib",
        lua="paper/preview.lua",
        css="paper/paper.css",
        typ="paper/paper.typ",
        code=library("report.paper.preview"),
    output:
        html=PREVIEW["html"],
        pdf=PREVIEW["pdf"],
    log:
        "logs/preview.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/preview.py"


onsuccess:
    quarto_note()
