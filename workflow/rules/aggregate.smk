# Aggregation, tables and figures: cheap, from the runs' metrics.json and samples.npz only, so
# a change here never retrains or re-evaluates. Each table and each figure is its own job whose
# inputs include its own module (vaeinf.report.tables.NAME, vaeinf.report.figures.NAME), so editing one
# rebuilds only it. The run table, every table and every figure are items of Snakemake's report
# (snakemake --report report.html), grouped by the paper's section, captions in workflow/report/.


localrules:
    aggregate,
    table,
    figure,
    variables,


rule aggregate:
    input:
        metrics=get_all_metrics,
        costs=get_all_costs,
        code=library("report.tidy"),
    output:
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Runs",
        ),
        bounds="results/bounds.csv",
        per_dim="results/per_dim.csv",
        cost="results/cost.csv",
        curves="results/curves.csv",
        snr="results/snr.csv",
        per_point="results/per_point.csv",
    log:
        "logs/aggregate.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate.py"


rule table:
    input:
        unpack(get_table_inputs),
    output:
        table=f"{GEN}/tables/{{table}}.md",
        html=report(
            f"{GEN}/tables/{{table}}.html",
            caption="../report/table.rst",
            category=report_section("table"),
            subcategory="Tables",
        ),
    log:
        "logs/tables/{table}.log",
    conda:
        CONDA_ENV
    params:
        variants=VARIANTS,
        labels=canonical(LABELS),
    script:
        "../scripts/table.py"


rule figure:
    input:
        unpack(get_figure_inputs),
    output:
        png=report(
            f"{GEN}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category=report_section("figure"),
            subcategory="Figures",
        ),
        pdf=f"{GEN}/figures/{{figure}}.pdf",
    log:
        "logs/figures/{figure}.log",
    conda:
        CONDA_ENV
    params:
        variants=VARIANTS,
        labels=canonical(LABELS),
        n_images=get_figure_n_images,
    script:
        "../scripts/figure.py"


rule variables:
    input:
        summary=rules.aggregate.output.summary,
        cost=rules.aggregate.output.cost,
        curves=rules.aggregate.output.curves,
        per_point=rules.aggregate.output.per_point,
        code=library("report.variables", "report.claims", "report.text", "report.tidy"),
    output:
        variables="paper/_variables.yml",
    log:
        "logs/variables.log",
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
                    "variants",
                    "Ks",
                    "seeds",
                    "run",
                    "paper",
                )
                if k in STUDY
            }
        ),
    script:
        "../scripts/variables.py"
