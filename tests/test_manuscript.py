"""The manuscript check (vaeinf.report.paper.check): what it accepts and each problem it reports, on
small synthetic papers; and the setup section generated from the configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vaeinf.report.paper.check import ManuscriptError, check, main, setup_markdown
from vaeinf.study.grid import runs

REPO = Path(__file__).resolve().parents[1]

QMD = """---
title: A test
bibliography: refs.bib
---

# Intro {#sec-intro}

The best method is {{< var result.best >}} (@fig-a, @tbl-b, @eq-c) [@burda2016].

{{< include _generated/table.md >}}

: A table {#tbl-b}

![A figure](_generated/a.png){#fig-a}

$$ a = b $$ {#eq-c}
"""


def make_paper(root: Path, qmd: str = QMD) -> Path:
    (root / "_generated").mkdir(parents=True)
    (root / "_quarto.yml").write_text("project:\n  render: [index.qmd]\n")
    (root / "index.qmd").write_text(qmd)
    (root / "refs.bib").write_text("@article{burda2016,\n  title = {IWAE},\n  year = {2016}\n}\n")
    (root / "_variables.yml").write_text("result:\n  best: iwae\n")
    (root / "_generated/table.md").write_text("| a | b |\n|---|--:|\n| 1 | 2 |\n")
    (root / "_generated/a.png").write_bytes(b"\x89PNG")
    return root


def test_a_complete_paper_passes(tmp_path):
    summary = check(make_paper(tmp_path))
    assert summary["cross_references"] == ["eq-c", "fig-a", "tbl-b"]
    assert summary["citations"] == ["burda2016"]
    assert summary["variables_used"] == ["result.best"]
    assert main(["check", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "_generated/a.png").unlink(), "figure file '_generated/a.png'"),
        (lambda p: (p / "_variables.yml").write_text("result: {}\n"), "undefined variable"),
        (lambda p: (p / "_generated/table.md").unlink(), "include '_generated/table.md'"),
        (lambda p: (p / "refs.bib").write_text(""), "citation '@burda2016'"),
        (lambda p: _edit(p, "(@fig-a,", "(@fig-zz, @fig-a,"), "'@fig-zz' has no label"),
        (lambda p: _edit(p, "@tbl-b, ", ""), "'tbl-b' is never cross-referenced"),
        (lambda p: _edit(p, "{#eq-c}", "{#fig-a}"), "'@eq-c' has no label"),
        (lambda p: _edit(p, "# Intro", "{{< meta x >}}\n\n# Intro"), "shortcode 'meta'"),
    ],
)
def test_each_problem_is_reported(tmp_path, breakage, message):
    paper = make_paper(tmp_path)
    breakage(paper)
    with pytest.raises(ManuscriptError, match=message):
        check(paper)
    assert main(["check", str(paper)]) == 1


def _edit(paper: Path, old: str, new: str) -> None:
    qmd = paper / "index.qmd"
    text = qmd.read_text()
    assert old in text
    qmd.write_text(text.replace(old, new, 1))


def test_variables_in_included_files_are_resolved(tmp_path):
    paper = make_paper(tmp_path)
    (paper / "_generated/table.md").write_text("Text {{< var result.missing >}}.\n")
    with pytest.raises(ManuscriptError, match="undefined variable 'result.missing'"):
        check(paper)


def test_the_paper_uses_only_known_labels_and_references():
    """The real paper, minus its generated inputs: every problem left is a missing input."""
    try:
        check(REPO / "paper")
    except ManuscriptError as e:
        problems = str(e).splitlines()[1:]
        allowed = ("include '_generated/", "figure file '_generated/", "_variables.yml")
        unexpected = [p for p in problems if not any(a in p for a in allowed)]
        assert not unexpected, unexpected


@pytest.mark.parametrize("config", ["config/config.yaml", "config/mnist.yaml"])
def test_setup_section_describes_the_config(config):
    cfg = {"method_overrides": {}, **yaml.safe_load((REPO / config).read_text())}
    text = setup_markdown(cfg)
    grid = runs(cfg)
    n_grid = sum(r.variant == r.method for r in grid)
    assert f"The study trains {len(grid)} runs" in text and f"is {n_grid} of them" in text
    assert all(f"(`{m}`)" in text for m in cfg["methods"])
    # Every method's own Ks are stated: the K lists of the methods of the grid.
    for m, ks in (cfg.get("method_Ks") or {}).items():
        assert f"K ∈ {{{', '.join(map(str, ks))}}}" in text, m
    t = cfg["run"]["train"]
    if t.get("patience"):
        assert f"for {t['patience']} epochs (it converged)" in text
        assert f"at the cap of {t['epochs']} epochs" in text
    if "mnist" in config:
        assert "@burda2016" in text and "hidden layers of 200 and 200 units" in text


def test_a_claim_stated_twice_is_reported(tmp_path):
    paper = make_paper(tmp_path)
    (paper / "_variables.yml").write_text(
        "result:\n  best: iwae\nclaim:\n  a: rises\nbasis:\n  a: '1 seed'\n"
    )
    _edit(paper, "[@burda2016].", "[@burda2016]. It {{< var claim.a >}}.")
    check(paper)
    _edit(paper, "# Intro {#sec-intro}", "# Intro {#sec-intro}\n\nIt {{< var claim.a >}}.")
    with pytest.raises(ManuscriptError, match="claim 'claim.a' is used 2 times"):
        check(paper)


@pytest.mark.parametrize(
    ("words", "settings", "ok"),
    [
        ("adaptive contrast", "avb: {adaptive_contrast: 'true'}", True),
        ("adaptive contrast", "avb: {adaptive_contrast: 'false'}", False),
        ("planar flows", "flow: {flow: radial}", False),
        ("planar flows", "flow: {flow: planar or radial}", True),
        (
            "backpropagated through the refinement",
            "semi_amortized: {backprop_through_refinement: 'false'}",
            False,
        ),
    ],
)
def test_the_methods_name_only_settings_the_runs_used(tmp_path, words, settings, ok):
    """A method's setting the Methods name (adaptive contrast, planar flows, backpropagation
    through the refinement) must be one its runs used (``settings.*``, from their resolved
    configs)."""
    paper = make_paper(tmp_path)
    (paper / "_variables.yml").write_text("result:\n  best: iwae\nsettings:\n  " + settings + "\n")
    _edit(paper, "# Intro {#sec-intro}", f"# Methods\n\nWe use {words}.\n\n# Intro {{#sec-intro}}")
    if ok:
        check(paper)
    else:
        with pytest.raises(ManuscriptError, match="the Methods say"):
            check(paper)
    # Outside the Methods the same words are not a description of the runs.
    _edit(paper, "# Methods\n\n", "# Background\n\n")
    check(paper)


@pytest.mark.parametrize(
    ("font_pt", "width", "ncol", "ok"),
    [(9, "100%", 0, True), (9, "40%", 0, False), (5, "100%", 0, False), (9, "100%", 2, False),
     (16, "100%", 2, True)],
)  # fmt: skip
def test_figure_text_that_prints_below_7_pt_is_reported(tmp_path, font_pt, width, ncol, ok):
    """The figure's smallest font (recorded when it is saved) scaled to its printed width: a
    6.7 in wide figure at 9 pt prints at 9 pt across the A4 text width, at 3.6 pt at 40 %,
    at 4.5 pt in one cell of a row of two (``layout-ncol=2``)."""
    from vaeinf.report.figures import style

    paper = make_paper(tmp_path)
    (paper / "_quarto.yml").write_text(
        "project:\n  render: [index.qmd]\nformat:\n  typst:\n    papersize: a4\n"
        "    margin:\n      x: 2cm\n"
    )
    plt, _ = style.lib()
    fig, ax = plt.subplots(figsize=(6.7, 3))
    ax.plot([0, 1], [0, 1])
    ax.tick_params(labelsize=font_pt)
    ax.set_xlabel("x", fontsize=max(12, font_pt))
    style.save(fig, paper / "_generated/a.png", tmp_path / "a.pdf")
    _edit(paper, "{#fig-a}", f"{{#fig-a width={width}}}")
    if ncol:
        _edit(paper, "![A figure]", f"::: {{layout-ncol={ncol}}}\n![A figure]")
        _edit(paper, f"width={width}}}", f"width={width}}}\n:::")
    if ok:
        check(paper)
    else:
        with pytest.raises(ManuscriptError, match="its smallest text prints at"):
            check(paper)
