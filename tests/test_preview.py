"""The paper without Quarto (vaeinf.report.paper.preview with paper/preview.lua), the interactive
figure of the bound and the time against K (vaeinf.report.figures.interactive) and the
provenance appendix (vaeinf.report.provenance).

The preview is rendered for real, HTML and PDF, from a small generated manuscript that uses
every construct of the paper: includes, variables, conditional content, a figure div with the
interactive plot, labelled equations, tables, citations and all four kinds of cross-reference.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vaeinf.report.paper.check import ManuscriptError, load

pypdf = pytest.importorskip("pypdf")
pytest.importorskip("typst")
pytest.importorskip("plotly")
pytest.importorskip("pypandoc")

from vaeinf.report.figures.interactive import (  # noqa: E402
    bound_and_time_data,
    bound_and_time_figure,
    bound_and_time_html,
)
from vaeinf.report.paper import preview  # noqa: E402
from vaeinf.report.provenance import benchmark_totals, provenance_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LUA = REPO / "paper" / "preview.lua"

QMD = """---
title: "A small study"
author: "The vaeinf authors"
abstract: "An abstract with a number, {{< var result.best_nll >}} nats."
---

# Introduction {#sec-intro}

The bound of @eq-iwae is tight [@burda2016]. @sec-results shows @tbl-nll and @fig-nll;
@fig-bound-time shows the cost. See also [-@fig-nll].

$$
\\mathcal{L}_K(x) = \\mathbb{E}\\left[\\log \\frac{1}{K} \\sum_{k=1}^{K} w_k\\right]
$$ {#eq-iwae}

# Results {#sec-results}

## Likelihood {#sec-likelihood}

The best NLL is {{< var result.best_nll >}} nats.
[HTMLONLYTEXT]{.content-visible when-format="html"}

::: {.content-visible unless-format="html"}
PDFONLYTEXT
:::

{{< include _generated/tables/nll.md >}}

: Test NLL by method and K. {#tbl-nll}

![Test NLL against K.](_generated/figures/nll_vs_k.png){#fig-nll width=60%}

::: {#fig-bound-time}

::: {.content-visible when-format="html"}
````{=html}
{{< include _generated/figures/bound_and_time_vs_k.html >}}
````
:::

::: {.content-visible unless-format="html"}
![](_generated/figures/bound_and_time_vs_k.png)
:::

Validation L~K~ and seconds per epoch against K.

:::

# References {.unnumbered}

::: {#refs}
:::

# Provenance {#sec-provenance .appendix}

Generated.
"""

BIB = """@inproceedings{burda2016,
  title = {Importance Weighted Autoencoders},
  author = {Burda, Yuri and Grosse, Roger and Salakhutdinov, Ruslan},
  booktitle = {International Conference on Learning Representations},
  year = {2016}
}
"""


def summary_frame(seed: int = 0) -> pd.DataFrame:
    """A synthetic summary.csv: 2 methods x 3 Ks x 2 seeds, random numbers."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "dataset": "digits",
            "method": m,
            "K": k,
            "seed": s,
            "test_nll.mean": 30 + rng.normal(),
            "time_per_epoch.final_val_LK": -31 + rng.normal(),
            "time_per_epoch.median_s": 0.1 * k * (1 + 0.1 * rng.random()),
        }  # fmt: skip
        for m in ("vae", "iwae")
        for k in (1, 5, 50)
        for s in (0, 1)
    ]
    return pd.DataFrame(rows)


def nll_table(summary: pd.DataFrame) -> str:
    means = summary.groupby(["method", "K"])["test_nll.mean"].mean().unstack("K")
    ks = list(means.columns)
    lines = ["| Method | " + " | ".join(f"K = {k}" for k in ks) + " |"]
    lines.append("|:---|" + "---:|" * len(ks))
    for method, row in means.iterrows():
        lines.append(f"| {method} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def png(path: Path, colour: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 5, 50], [3, 2, 1], color=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def make_paper(root: Path) -> Path:
    gen = root / "_generated"
    (gen / "tables").mkdir(parents=True)
    summary = summary_frame()
    (gen / "tables/nll.md").write_text(nll_table(summary))
    png(gen / "figures/nll_vs_k.png", "tab:blue")
    png(gen / "figures/bound_and_time_vs_k.png", "tab:red")
    bound_and_time_html(summary, None, gen / "figures/bound_and_time_vs_k.html")
    (root / "_quarto.yml").write_text(
        "project:\n  render: [index.qmd]\nbibliography: refs.bib\n"
        "format:\n  typst:\n    papersize: a4\n    margin: {x: 2cm, y: 2cm}\n    fontsize: 10pt\n"
    )
    (root / "index.qmd").write_text(QMD)
    (root / "refs.bib").write_text(BIB)
    best = summary.groupby(["method", "K"])["test_nll.mean"].mean().min()
    (root / "_variables.yml").write_text(yaml.safe_dump({"result": {"best_nll": f"{best:.2f}"}}))
    shutil.copy2(LUA, root / "preview.lua")
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = make_paper(tmp_path_factory.mktemp("paper"))
    out = root / "_output"
    preview.render(root, out / "preview.html", out / "preview.pdf")
    reader = pypdf.PdfReader(out / "preview.pdf")
    pages = [p.extract_text() for p in reader.pages]
    return {
        "root": root,
        "html": (out / "preview.html").read_text(),
        "reader": reader,
        "pages": pages,
        "text": re.sub(r"\s+", " ", "\n".join(pages)),
    }


def test_pdf_has_every_figure_and_table_number(rendered):
    images = sum(len(page.images) for page in rendered["reader"].pages)
    assert images == 2  # the NLL figure and the bound-and-time figure's PNG
    nll = (rendered["root"] / "_generated/tables/nll.md").read_text()
    numbers = re.findall(r"\d+\.\d\d", nll)
    assert len(numbers) == 6
    for n in numbers:
        assert n in rendered["text"]


def test_pdf_cross_references_are_numbered(rendered):
    text = rendered["text"]
    for unresolved in ("{{<", "??", "@fig-", "@tbl-", "@eq-", "@sec-", "UNDEFINED"):
        assert unresolved not in text
    assert "Equation 1 is tight" in text and "(1)" in text
    assert "Section 2 shows Table 1 and Figure 1; Figure 2 shows the cost" in text
    assert "See also 1." in text  # [-@fig-nll]: the number alone
    assert "Figure 1: Test NLL against K." in text
    assert "Figure 2: Validation" in text and "Table 1: Test NLL" in text
    assert "2.1 Likelihood" in text and "A Provenance" in text
    # citeproc: the citation and the bibliography entry
    assert "is tight (Burda et al. 2016)" in text
    assert "Importance Weighted Autoencoders" in text


def test_pdf_conditional_content_and_notice(rendered):
    text = rendered["text"]
    assert "PDFONLYTEXT" in text and "HTMLONLYTEXT" not in text
    assert "Plotly" not in text
    for page in rendered["pages"]:
        assert "Preview rendered without Quarto" in re.sub(r"\s+", " ", page)


def test_html_is_self_contained_and_interactive(rendered):
    html = rendered["html"]
    assert "HTMLONLYTEXT" in html and "PDFONLYTEXT" not in html
    assert html.count('class="preview-banner"') == 1
    # one image in the HTML (the bound-and-time figure is the interactive one), embedded
    imgs = re.findall(r"<img[^>]*src=\"([^\"]*)\"", html)
    assert len(imgs) == 1 and imgs[0].startswith("data:image/png;base64,")
    assert not re.search(r"<(script|link|iframe)[^>]+(src|href)=\"(?!data:)", html)
    assert html.count('id="bound-and-time"') == 1 and "Plotly.newPlot" in html
    assert '<figure id="fig-bound-time">' in html
    assert '<a href="#fig-bound-time">Figure 2</a>' in re.sub(r"\s+", " ", html)
    assert "<math" in html and 'class="eqno">(1)' in html


def test_a_layout_row_sets_its_figures_side_by_side(tmp_path):
    """``::: {layout-ncol=2}``: two numbered figures in one row, in the PDF (the images at one
    height, apart) and in the HTML (a two-column grid)."""
    root = make_paper(tmp_path)
    shutil.copy2(root / "_generated/figures/nll_vs_k.png", root / "_generated/figures/b.png")
    qmd = root / "index.qmd"
    row = (
        "::: {layout-ncol=2}\n![Left.](_generated/figures/nll_vs_k.png){#fig-left}\n\n"
        "![Right.](_generated/figures/b.png){#fig-right}\n:::\n\n@fig-left, @fig-right.\n"
    )
    qmd.write_text(qmd.read_text().replace("# References", row + "\n# References"))
    out = root / "_output"
    preview.render(root, out / "preview.html", out / "preview.pdf")
    placed = []  # (x, y) of every image drawn, from the PDF's content streams

    def visit(op, args, cm, tm):
        if op == b"Do":
            placed.append((round(cm[4]), round(cm[5])))

    reader = pypdf.PdfReader(out / "preview.pdf")
    text = ""
    for page in reader.pages:
        text += page.extract_text(visitor_operand_before=visit)
    text = re.sub(r"\s+", " ", text)
    assert "Figure 3: Left." in text and "Figure 4: Right." in text
    assert "Figure 3, Figure 4." in text
    assert len(placed) == 4  # figure 1, the bound-and-time PNG and the row's two
    ys = {}
    for x, y in placed:
        ys.setdefault(y, []).append(x)
    assert sorted(len(v) for v in ys.values())[-1] == 2  # two images at one height
    html = (out / "preview.html").read_text()
    assert "grid-template-columns: repeat(2, minmax(0, 1fr))" in html
    assert '<figure id="fig-left">' in html and '<figure id="fig-right">' in html


def test_an_unknown_reference_is_an_error_not_question_marks(tmp_path):
    with pytest.raises(preview.PreviewError, match="@fig-zz has no label"):
        preview.render_html(tmp_path, "See @fig-zz.\n", preview.markdown_args(LUA, []))


def test_render_checks_the_manuscript_first(tmp_path):
    root = make_paper(tmp_path)
    (root / "_generated/figures/nll_vs_k.png").unlink()
    with pytest.raises(ManuscriptError, match="nll_vs_k.png"):
        preview.render(root, root / "out.html", root / "out.pdf")
    assert not (root / "out.html").exists() and not (root / "out.pdf").exists()
    assert preview.main([str(root)]) == 1  # the command line says so and writes nothing
    assert not (root / "_output").exists()


def test_the_paper_uses_only_what_the_filter_knows():
    """Every cross-reference kind and conditional class of the real paper is handled."""
    _, text, _, _ = load(REPO / "paper")
    refs = set(re.findall(r"@(\w+)-", text))
    assert refs <= {"fig", "tbl", "eq", "sec"}
    conditional = set(re.findall(r"\.(content-\w+)", text))
    assert conditional <= {"content-visible", "content-hidden"}
    assert 'when-format="html"' in text and 'unless-format="html"' in text


# ---------------------------------------------------------------------------------------------
# The interactive figure of the bound and the time against K


def test_bound_and_time_traces_pair_per_method_with_mean_sd():
    """The PDF figure's layout: a panel per method with the bound (left axis) and the time
    (right axis); a named variant's points in its base method's panel, named in the legend."""
    summary = summary_frame(1)
    fig = bound_and_time_figure(summary, None, methods=["iwae", "vae"])
    traces = fig.data
    assert len(traces) == 4
    assert [t.legendgroup for t in traces] == ["iwae", "iwae", "vae", "vae"]
    assert [(t.xaxis, t.yaxis) for t in traces] == [
        ("x", "y"),
        ("x", "y2"),
        ("x2", "y3"),
        ("x2", "y4"),
    ]
    assert [a.text for a in fig.layout.annotations] == ["iwae", "vae"]  # the panel titles
    assert not any(t.showlegend for t in traces)
    dreg = summary[summary["method"] == "iwae"].assign(variant="iwae-dreg")
    both = pd.concat([summary.assign(variant=summary["method"]), dreg])
    fig2 = bound_and_time_figure(both, None, methods=["iwae", "vae", "iwae-dreg"])
    ablation = [t for t in fig2.data if t.name == "iwae-dreg"]
    assert [(t.xaxis, t.yaxis, t.showlegend, t.mode) for t in ablation] == [
        ("x", "y", True, "markers"),
        ("x", "y2", False, "markers"),
    ]
    g = summary.groupby(["method", "K"])
    for t in traces:
        column = (
            "time_per_epoch.median_s" if t.yaxis in ("y2", "y4") else "time_per_epoch.final_val_LK"
        )
        mean = g[column].mean().loc[t.legendgroup]
        sd = g[column].std().loc[t.legendgroup]
        np.testing.assert_allclose(t.y, mean.to_numpy())
        np.testing.assert_allclose(t.error_y.array, sd.to_numpy())
        digits = 3 if t.yaxis in ("y2", "y4") else 2
        assert f"{mean.iloc[0]:.{digits}f} ± {sd.iloc[0]:.{digits}f}" in t.text[0]
        assert "mean ± s.d. over 2 seeds" in t.text[0]
    assert fig.layout.xaxis.type == "log"


def test_bound_and_time_takes_time_from_the_cost_table():
    summary = summary_frame(2)
    cost = summary[["dataset", "method", "K", "seed"]].assign(epoch_s_fastest=7.0)
    data = bound_and_time_data(summary, cost)
    assert (data["epoch_s_mean"] == 7.0).all()
    bound = summary.groupby(["dataset", "method", "K"])["time_per_epoch.final_val_LK"].mean()
    np.testing.assert_allclose(data["bound_mean"], bound.to_numpy())
    with pytest.raises(ValueError, match="time:epoch_s_fastest"):
        bound_and_time_data(summary, cost.drop(columns="epoch_s_fastest"))


def test_bound_and_time_html_is_self_contained_and_reproducible(tmp_path):
    summary = summary_frame(3)
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    bound_and_time_html(summary, None, a)
    bound_and_time_html(summary, None, b)
    html = a.read_text()
    assert a.read_bytes() == b.read_bytes()
    assert "<script src" not in html and "Plotly.newPlot" in html and len(html) > 1_000_000
    assert "```" not in html and "{{<" not in html  # safe inside the paper's raw HTML block


# ---------------------------------------------------------------------------------------------
# The provenance appendix


def write_run(root: Path, name: str, provenance: dict, bench: dict[str, list[float]]) -> tuple:
    run = root / "results" / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"metrics": {}, "provenance": provenance}))
    bdir = root / "benchmarks" / name
    bdir.mkdir(parents=True)
    for rule, seconds in bench.items():
        rows = "\n".join(f"{s}\t0:00:01\t{100 + s}\t1\t1\t1\t0\t0\t50\t{s / 2}" for s in seconds)
        (bdir / f"{rule}.tsv").write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            + rows
            + "\n"
        )
    return run / "metrics.json", bdir


def test_provenance_sums_benchmarks_and_names_devices(tmp_path):
    packages = {"vaeinf": "0.1.0", "torch": "2.13.0"}
    cpu = {"packages": packages, "git_commit": "abc123", "device": "cpu", "cpu_threads": 1,
           "platform": "Linux", "python": "3.11.7"}  # fmt: skip
    gpu = cpu | {"packages": packages | {"torch": "2.12.0"}, "device": "cuda", "gpu": "Some GPU"}
    m1, b1 = write_run(tmp_path, "d/vae/k1/seed0", cpu, {"train": [10.5], "evaluate": [2.0]})
    m2, b2 = write_run(tmp_path, "d/vae/k5/seed0", gpu, {"train": [20.25], "evaluate": [3.0]})
    missing = tmp_path / "benchmarks/d/vae/k9/seed0"
    config = {"datasets": ["d"], "methods": ["vae"], "Ks": [1, 5], "run": {"eval": {"nll_k": 9}}}
    text = provenance_markdown([m1, m2], [b1, b2, missing], config)

    totals = benchmark_totals(sorted([*b1.glob("*.tsv"), *b2.glob("*.tsv")]))
    assert totals.set_index("rule")["s"].to_dict() == {"evaluate": 5.0, "train": 30.75}
    assert totals.set_index("rule")["jobs"].to_dict() == {"evaluate": 2, "train": 2}
    assert "| train | 2 | 0:00:31 (30.8 s) |" in text
    assert "| total | 4 | 0:00:36 (35.8 s) |" in text
    assert "| torch | 2.13.0 (1 run), 2.12.0 (1 run) |" in text or (
        "| torch | 2.12.0 (1 run), 2.13.0 (1 run) |" in text
    )
    assert "| vaeinf | 0.1.0 |" in text
    assert "| cuda (Some GPU) | 1 |" in text and "| cpu (Linux, 1 thread) | 1 |" in text
    assert "commit abc123" in text
    assert "No benchmark record for 1 run" in text and "k9/seed0" in text
    block = re.search(r"```yaml\n(.*?)```", text, re.S)[1]
    assert yaml.safe_load(block) == config


def test_benchmark_totals_rejects_a_file_without_seconds(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match="no column 's'"):
        benchmark_totals([bad])


def test_benchmark_totals_take_a_served_jobs_usage_from_its_log(tmp_path):
    """A job run by the job server: its record times the waiting script, its log's last line
    the job itself; a log whose last run was not served keeps the record's figures."""
    from vaeinf.study.jobserver import USAGE_PREFIX

    _, bdir = write_run(tmp_path, "d/vae/k1/seed0", {}, {"train": [10.0], "evaluate": [4.0]})
    logs = tmp_path / "logs/d/vae/k1/seed0"
    logs.mkdir(parents=True)
    (logs / "train.log").write_text(f"trained\n{USAGE_PREFIX} cpu_s=7.25 max_rss_mb=310\n")
    # served once, then rerun without the server: the last line is the job's own
    (logs / "evaluate.log").write_text(f"{USAGE_PREFIX} cpu_s=9.00 max_rss_mb=1\ntest NLL 1\n")
    totals = benchmark_totals(sorted(bdir.glob("*.tsv"))).set_index("rule")
    assert totals.loc["train", "cpu_time"] == 7.25 and totals.loc["train", "max_rss"] == 310
    assert totals.loc["train", "s"] == 10.0  # the wall time is the record's
    assert totals.loc["evaluate", "cpu_time"] == 2.0 and totals.loc["evaluate", "max_rss"] == 104
