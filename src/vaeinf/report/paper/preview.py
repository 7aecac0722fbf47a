"""The paper rendered without Quarto: a preview in HTML and PDF from the same manuscript.

Quarto renders the paper wherever it is installed. Where it is not, :func:`render` turns the
manuscript that :mod:`vaeinf.report.paper.check` resolves (includes and variables filled
in, checked) into

- ``preview.html``: pandoc's standalone HTML with the images embedded as data URIs (by the
  filter), scripts and styles inline and the equations as MathML, so it opens offline from a
  single file;
- ``preview.pdf``: pandoc's Typst output compiled by the ``typst`` Python package, with the
  fonts that package ships (no network, no TeX).

Both pass through ``paper/preview.lua`` (Quarto's conditional content and numbered
``@fig-``/``@tbl-``/``@eq-``/``@sec-`` cross-references) and citeproc for citations and the
bibliography. Every HTML page carries a banner and every PDF page a header saying it is a
preview rendered without Quarto. ``python -m vaeinf.report.paper.preview paper`` renders
from the command line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from vaeinf.report.paper.check import ManuscriptError, check, load
from vaeinf.rundir import atomic_write_bytes

NOTICE = (
    "Preview rendered without Quarto (pandoc and Typst). Run the workflow where Quarto is "
    "installed for the paper itself."
)

HTML_STYLE = """<style>
.preview-banner { position: sticky; top: 0; z-index: 10; margin: 0 0 1.5em;
  padding: 0.5em 0.8em; background: #fff4d6; border: 1px solid #d9b44a; border-radius: 4px;
  font: 0.9em/1.4 system-ui, sans-serif; }
span.equation { display: flex; align-items: center; }
span.equation > math { flex: 1; }
span.equation > .eqno { margin-left: 1em; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; }
table { margin: 0 auto; }
</style>"""

HTML_BANNER = f'<div class="preview-banner" role="note"><strong>Preview.</strong> {NOTICE}</div>'

TYPST_HEADER = f"""#set page(header: align(right, text(size: 8pt, fill: luma(90))[{NOTICE}]))
#set figure(numbering: none)
"""


def paper_typst(paper_dir: Path) -> str:
    """The paper's own Typst rules (``paper.typ``, which Quarto's PDF includes too)."""
    typ = paper_dir / "paper.typ"
    return typ.read_text() if typ.is_file() else ""


class PreviewError(RuntimeError):
    """Pandoc or Typst failed; the message carries their output."""


def _pandoc(args: list[str], markdown: str, cwd: Path) -> bytes:
    import pypandoc

    cmd = [pypandoc.get_pandoc_path(), "--from=markdown", *args]
    r = subprocess.run(cmd, input=markdown.encode(), cwd=cwd, capture_output=True)
    if r.returncode != 0:
        raise PreviewError(f"pandoc failed ({r.returncode}): {r.stderr.decode().strip()}")
    return r.stdout


def _bibliography(text: str, quarto: dict) -> list[str]:
    front = (yaml.safe_load(text.split("---", 2)[1]) or {}) if text.startswith("---") else {}
    bib = front.get("bibliography") or quarto.get("bibliography") or []
    return [bib] if isinstance(bib, str) else list(bib)


def typst_variables(quarto: dict) -> dict:
    """Page settings of ``_quarto.yml``'s typst format as pandoc template variables."""
    typst = ((quarto.get("format") or {}).get("typst")) or {}
    out = {"papersize": typst.get("papersize", "a4"), "page-numbering": "1"}
    if typst.get("margin"):
        out["margin"] = dict(typst["margin"])  # a map: pandoc's template writes its pairs
    if "fontsize" in typst:
        out["fontsize"] = str(typst["fontsize"])
    if "columns" in typst:
        out["columns"] = str(typst["columns"])
    return out


def markdown_args(lua_filter: Path, bibliography: list[str]) -> list[str]:
    """The pandoc options both outputs share: the filter before citeproc, so that citeproc
    only sees the bibliography citations."""
    return [
        f"--lua-filter={lua_filter.resolve()}",
        "--citeproc",
        *[f"--bibliography={b}" for b in bibliography],
        "--standalone",
    ]


def paper_css(paper_dir: Path) -> str:
    """The paper's own stylesheet (``paper.css``, which Quarto's HTML uses too), inline."""
    css = paper_dir / "paper.css"
    return f"<style>\n{css.read_text()}</style>" if css.is_file() else ""


def render_html(paper_dir: Path, text: str, common: list[str]) -> bytes:
    return _pandoc(
        [
            "--to=html5",
            "--mathml",
            "--toc",
            "--toc-depth=2",
            f"--variable=header-includes:{HTML_STYLE}{paper_css(paper_dir)}",
            f"--variable=include-before:{HTML_BANNER}",
            *common,
        ],
        text,
        paper_dir,
    )


def render_pdf(paper_dir: Path, text: str, common: list[str], quarto: dict) -> bytes:
    import typst

    # Structured variables (the margin map) need a defaults file; --variable takes strings.
    with tempfile.TemporaryDirectory() as tmp:
        defaults = Path(tmp) / "typst.yaml"
        defaults.write_text(yaml.safe_dump({"variables": typst_variables(quarto)}))
        source = _pandoc(
            [
                "--to=typst-citations",
                f"--defaults={defaults}",
                f"--variable=header-includes:{TYPST_HEADER}{paper_typst(paper_dir)}",
                *common,
            ],
            text,
            paper_dir,
        )
    # Image paths are relative to the paper directory, the Typst root. Only the fonts the typst
    # package ships (Libertinus Serif, New Computer Modern (Math), DejaVu Sans Mono): the same
    # PDF on every machine, nothing looked up or fetched.
    try:
        pdf, warnings = typst.compile_with_warnings(
            source, root=str(paper_dir.resolve()), format="pdf", ignore_system_fonts=True
        )
    except typst.TypstError as e:
        raise PreviewError(f"typst failed: {e}") from e
    for w in warnings:
        print(f"typst warning: {w}", file=sys.stderr)
    return pdf


def render(
    paper_dir: str | Path,
    html: str | Path | None,
    pdf: str | Path | None,
    lua_filter: str | Path | None = None,
) -> dict:
    """Check the manuscript in ``paper_dir`` and write its preview to ``html`` and ``pdf``.

    ``lua_filter`` defaults to ``preview.lua`` in ``paper_dir``. Raises
    :class:`~vaeinf.report.paper.check.ManuscriptError` when the manuscript check fails (nothing is
    written then) and :class:`PreviewError` when pandoc or Typst fails.
    """
    root = Path(paper_dir)
    lua = Path(lua_filter) if lua_filter else root / "preview.lua"
    if not lua.is_file():
        raise ManuscriptError(f"the preview filter '{lua}' does not exist")
    summary = check(root)
    _, text, quarto, _ = load(root)
    common = markdown_args(lua, _bibliography(text, quarto))
    out = {}
    if html is not None:
        atomic_write_bytes(html, render_html(root, text, common))
        out["html"] = str(html)
    if pdf is not None:
        atomic_write_bytes(pdf, render_pdf(root, text, common, quarto))
        out["pdf"] = str(pdf)
    return summary | out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaeinf.report.paper.preview", description=__doc__)
    p.add_argument("paper_dir", nargs="?", default="paper")
    p.add_argument("--html", default=None, help="default: PAPER_DIR/_output/preview.html")
    p.add_argument("--pdf", default=None, help="default: PAPER_DIR/_output/preview.pdf")
    args = p.parse_args(argv)
    out = Path(args.paper_dir) / "_output"
    try:
        done = render(
            args.paper_dir, args.html or out / "preview.html", args.pdf or out / "preview.pdf"
        )
    except (ManuscriptError, PreviewError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"preview: {done['html']}, {done['pdf']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
