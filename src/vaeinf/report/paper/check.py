"""The paper: its generated setup section and a check of the manuscript that needs no Quarto.

:func:`write_setup` turns the study config into the "Experimental setup" include, so the paper
describes exactly the grid and hyperparameters that were run.

:func:`check` is what can be verified without Quarto (which CI machines do not have): it
resolves every ``{{< include >}}`` and ``{{< var >}}`` shortcode the way Quarto does, parses the
result with pandoc (from ``pypandoc-binary``), and fails on a missing include or figure file, an
undefined variable, an unknown shortcode, a ``@fig-``/``@tbl-``/``@eq-``/``@sec-`` reference
without a label, a label that is never referenced, a citation missing from the bibliography, or
a ``claim.*`` variable (a phrase chosen by the runs, :mod:`vaeinf.report.claims`) that the text
uses but the variables lack, or that has no ``basis.*`` (the numbers behind it). Its report
lists every claim the text uses with its basis, and the Results and Discussion sentences that
state a direction without a claim variable, for review. ``python -m vaeinf.report.paper.check
check paper`` runs it from the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import yaml

from vaeinf.report.text import join
from vaeinf.rundir import atomic_write_text

INCLUDE_RE = re.compile(r"\{\{<\s*include\s+(?P<path>[^\s>]+)\s*>\}\}")
VAR_RE = re.compile(r"\{\{<\s*var\s+(?P<key>[^\s>]+)\s*>\}\}")
SHORTCODE_RE = re.compile(r"\{\{<\s*(?P<name>[^\s>]+)[^>]*>\}\}")
LABEL_RE = re.compile(r"\{#(?P<id>(?:fig|tbl|eq|sec)-[A-Za-z0-9_-]+)\}")
XREF_PREFIXES = ("fig-", "tbl-", "eq-", "sec-")
BIB_KEY_RE = re.compile(r"@\w+\s*\{\s*(?P<key>[^,\s]+)\s*,")


class ManuscriptError(ValueError):
    """The manuscript has problems; the message lists every one."""


# ---------------------------------------------------------------------------------------------
# Experimental setup from the config

DATASET_TEXT = {
    "digits": (
        "scikit-learn's 8×8 handwritten digits (1797 images, D = 64), intensities scaled to "
        "[0, 1] and binarized once; split 1397/200/200 into training, validation and test"
    ),
    "binarized_mnist": (
        "the statically binarized MNIST of Larochelle & Murray (28×28, D = 784; 50000/10000/10000)"
    ),
    "mnist": (
        "MNIST (28×28, D = 784) with the protocol of @burda2016: the 60000 training images "
        "are binarized dynamically (a fresh Bernoulli draw every minibatch), the last 400 are "
        "held out for validation, and validation and test images are binarized once"
    ),
}


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def setup_markdown(config: dict) -> str:
    """The "Experimental setup" section body for the study ``config`` (Markdown)."""
    from vaeinf.study import grid as study

    datasets, methods = config["datasets"], config["methods"]
    ks, seeds = sorted(config["Ks"]), config["seeds"]
    table, labels = study.variants(config), study.labels(config)
    all_runs = study.runs(config)
    n_runs = len(all_runs)
    n_grid = sum(r.variant == r.method for r in all_runs)
    named = list(config.get("variants") or {})
    base = study.resolved_run_config(
        study.run_overrides(config, datasets[0], methods[0], ks[0], seeds[0])
    )
    m, t, e = base.model.resolved(), base.train, base.eval
    if t.schedule == "burda":
        n_ep = t.epochs or 3280
        schedule = (
            f"the schedule of @burda2016 (stage i of 3^i epochs at learning rate "
            f"10^-3 · 10^(-i/7)), at most {n_ep} epochs"
        )
    else:
        schedule = f"a constant learning rate of {t.lr:g}, at most {t.epochs} epochs"
    # Which methods run at which Ks: grouped by their K lists, in the order of the methods.
    by_ks: dict[tuple, list[str]] = {}
    for meth in methods:
        by_ks.setdefault(tuple(table[meth]["Ks"]), []).append(labels[meth])
    at_ks = "; ".join(
        f"{join(names)} at K ∈ {{{', '.join(map(str, k))}}}" for k, names in by_ks.items()
    )
    lines = [
        f"The study trains {n_runs} runs. The grid, {_count(datasets, 'dataset')} × "
        f"{_count(methods, 'method')} × {_count(seeds, 'seed')} ({join(seeds)}) at each "
        f"method's values of K, is {n_grid} of them: {at_ks}"
        + (
            f"; {_count(named, 'ablation')} of a method beside it (@sec-ablations) are the "
            f"other {n_runs - n_grid}."
            if named
            else "."
        ),
        "",
        "**Data.** " + "; ".join(DATASET_TEXT.get(d, d) for d in datasets) + ".",
        "",
        f"**Model.** Every method shares the decoder p(x|z), a Bernoulli MLP with hidden layers "
        f"of {join(m.hidden[::-1])} units and {m.activation} activations, and the prior "
        f"p(z) = N(0, I) over a latent space of {m.latent} dimensions; the encoders are MLPs "
        f"with hidden layers of {join(m.hidden)} units"
        + (" (the one-stochastic-layer net of @burda2016)" if base.model.preset else "")
        + ".",
        "",
        f"**Optimization.** Adam [@kingma2015adam] with β = ({t.betas[0]:g}, {t.betas[1]:g}), "
        f"ε = {t.eps:g}, minibatches of {t.batch_size}"
        + (f" from the first {t.train_points} training points" if t.train_points else "")
        + f", {schedule}; the encoder gradient estimator is `{base.estimator}` unless an "
        "ablation says otherwise. "
        + stopping_text(t)
        + " Each run is one Snakemake job; the training K is the number of samples of the "
        "method's objective.",
        "",
        f"**Evaluation.** The test negative log-likelihood is the importance-sampled estimate "
        f"−L~{e.nll_k}~ with {e.nll_k} samples per test point [@burda2016]"
        + (f", on the first {e.max_points} test points" if e.max_points else "")
        + f"; the bounds L~K~ are measured for K ∈ "
        f"{{{', '.join(map(str, sorted(set(e.ks) | set(ks))))}}}. A latent unit is active when "
        f"$\\mathrm{{Cov}}_x(\\mathbb{{E}}_q[z_i \\mid x]) > {e.active_threshold:g}$ and "
        f"collapsed when its average KL(q(z~i~|x) ‖ p(z~i~)) is below "
        f"{e.collapse_threshold:g} nats; a posterior without closed-form moments is described by "
        f"{e.moment_samples} samples per test point, and the mutual information uses "
        f"{e.mi_samples} sample{'s' if e.mi_samples != 1 else ''} per point.",
    ]
    # One paragraph each, the items joined by semicolons (a list would take a line per item),
    # set ragged: justified, their unbreakable code would stretch the spaces between words.
    lines += [
        "",
        "::: {.ragged}",
        "**Method settings** (`method_options`, defaults filled in): "
        + "; ".join(method_options(config))
        + ".",
    ]
    if named:
        lines += [
            "",
            "**Ablations.** Each ablation is its base method's run config with a few settings "
            "changed, as resolved for its runs (its other options are its base's, above): "
            + "; ".join(variant_settings(config))
            + ".",
        ]
    lines += [":::"]
    return "\n".join(lines) + "\n"


def stopping_text(t) -> str:
    """When a run of train settings ``t`` ends, in words (vaeinf.core.train.stop_reason)."""
    val = f"L~{t.val_k}~" if t.val_k else "its training bound"
    rule = []
    if t.patience:
        smooth = (
            f", smoothed as s~t~ = {t.smoothing:g} s~t−1~ + {1 - t.smoothing:g} v~t~,"
            if t.smoothing
            else ""
        )
        rule.append(
            f"a run ends when its validation bound v~t~ ({val} on {t.val_points or 'all'} "
            f"validation points){smooth} has not risen by more than {t.min_delta:g} nats for "
            f"{t.patience} epoch{'s' if t.patience != 1 else ''} (it converged)"
            + (f", but not before epoch {t.min_epochs}" if t.min_epochs > 1 else "")
        )
    cap = f"at the cap of {t.epochs} epochs" if t.epochs else ""
    budget = f"after {t.max_steps} optimizer steps" if t.max_steps else ""
    ends = join([x for x in (cap, budget) if x], "or")
    if rule:
        text = rule[0] + (f", or {ends}" if ends else "")
    else:
        text = f"every run trains {ends or 'to the end of its schedule'}"
    return (
        text[0].upper()
        + text[1:]
        + "; the state evaluated is that of its highest validation bound."
    )


def variant_settings(config: dict) -> list[str]:
    """Per named variant of the study: its display name, base, Ks, estimator and objective, from
    its resolved run config, and the settings that differ from its base's (its other options are
    its base's, which :func:`method_options` lists)."""
    import dataclasses

    from vaeinf.names import DEFAULT_OBJECTIVES
    from vaeinf.study import grid as study

    table, labels = study.variants(config), study.labels(config)
    d0, s0 = config["datasets"][0], config["seeds"][0]
    parts = []
    for name in config.get("variants") or {}:
        spec = table[name]
        K = spec["Ks"][0]
        cfg = study.run_config(config, d0, name, K, s0)
        base = study.resolved_run_config(_base_overrides(config, spec["method"], d0, K, s0))
        opts = dataclasses.asdict(cfg.options())
        objective = opts.get("objective", DEFAULT_OBJECTIVES[cfg.method])
        changed = _differences(base.identity(), cfg.identity(), skip=("variant",))
        parts.append(
            f"{labels[name]} (`{name}`): {labels.get(cfg.method, cfg.method)} at "
            f"K ∈ {{{', '.join(map(str, spec['Ks']))}}}; estimator `{cfg.estimator}`, "
            f"objective `{objective}`; changed from the base: "
            + (", ".join(f"`{k}: {a} → {b}`" for k, a, b in changed) or "nothing")
        )
    return parts


def _base_overrides(config: dict, method: str, dataset: str, K: int, seed: int) -> dict:
    """The run config of ``method`` itself at (dataset, K, seed), whether or not the study
    lists it among its methods."""
    from vaeinf.study import grid as study

    if method not in config["methods"]:
        config = config | {"methods": [*config["methods"], method]}
    return study.run_overrides(config, dataset, method, K, seed)


def _differences(a: dict, b: dict, prefix: str = "", skip=()) -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) of every setting that differs."""
    out = []
    for k in a.keys() | b.keys():
        if k in skip:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return sorted(out)


def method_options(config: dict) -> list[str]:
    """Every method's resolved ``method_options`` (the study's overrides over the defaults)."""
    import dataclasses

    from vaeinf.study import grid as study

    parts, labels = [], study.labels(config)
    for m in config["methods"]:
        cfg = study.resolved_run_config(
            study.run_overrides(
                config, config["datasets"][0], m, config["Ks"][0], config["seeds"][0]
            )
        )
        opts = cfg.options()
        items = [f"`{k}={v}`" for k, v in dataclasses.asdict(opts).items() if v is not None]
        parts.append(f"{labels[m]} (`{m}`): " + (", ".join(items) if items else "none"))
    return parts


def write_setup(config: dict, out: str | Path) -> None:
    atomic_write_text(out, setup_markdown(config))


# ---------------------------------------------------------------------------------------------
# The check


def flatten_variables(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1, "a": {...}}`` (Quarto's dotted var keys)."""
    out: dict[str, object] = {}
    for k, v in (data or {}).items():
        key = f"{prefix}{k}"
        out[key] = v
        if isinstance(v, dict):
            out.update(flatten_variables(v, key + "."))
    return out


def resolve(
    path: Path,
    root: Path,
    variables: dict,
    problems: list[str],
    seen: tuple[Path, ...] = (),
) -> str:
    """The text of ``path`` with includes inlined and variables substituted (as Quarto does).

    Include paths are relative to the including file, or to the project ``root`` when they start
    with ``/``. Problems are appended to ``problems``.
    """
    text = path.read_text()

    def include(m: re.Match) -> str:
        rel = m["path"]
        target = (root / rel.lstrip("/")) if rel.startswith("/") else (path.parent / rel)
        if not target.is_file():
            problems.append(f"{path.name}: include '{rel}' does not exist ({target})")
            return ""
        if target.resolve() in seen:
            problems.append(f"{path.name}: include '{rel}' includes itself")
            return ""
        return resolve(target, root, variables, problems, (*seen, target.resolve()))

    def var(m: re.Match) -> str:
        key = m["key"]
        if key not in variables:
            problems.append(f"{path.name}: undefined variable '{key}' (not in _variables.yml)")
            return f"UNDEFINED({key})"
        value = variables[key]
        if isinstance(value, dict | list):
            problems.append(f"{path.name}: variable '{key}' is not a scalar")
        return str(value)

    text = INCLUDE_RE.sub(include, text)
    text = VAR_RE.sub(var, text)
    for m in SHORTCODE_RE.finditer(text):
        problems.append(f"{path.name}: shortcode '{m['name']}' is not checked; use include/var")
    return text


def _walk(node, visit) -> None:
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            _walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            _walk(v, visit)


_ATTR_FIRST = {"Div", "Span", "CodeBlock", "Code", "Table", "Figure", "Image", "Link"}


def analyse(markdown: str) -> dict:
    """Parse Markdown with pandoc: labels, cross-references, citations and image paths."""
    import pypandoc

    ast = json.loads(pypandoc.convert_text(markdown, "json", format="markdown"))
    found: dict[str, list] = {"labels": [], "cites": [], "images": []}

    def visit(node: dict) -> None:
        t, c = node.get("t"), node.get("c")
        if t in _ATTR_FIRST and c and c[0] and c[0][0]:
            found["labels"].append(c[0][0])
        if t == "Header" and c[1][0]:
            found["labels"].append(c[1][0])
        if t == "Image":
            found["images"].append(c[2][0])
        if t == "Cite":
            found["cites"] += [ci["citationId"] for ci in c[0]]
        if t == "Str":
            found["labels"] += [m["id"] for m in LABEL_RE.finditer(c)]

    _walk(ast["blocks"], visit)
    _walk(ast.get("meta", {}), visit)
    return found


def bib_keys(path: Path) -> set[str]:
    return {m["key"] for m in BIB_KEY_RE.finditer(path.read_text())}


def load(root: Path, document: str | None = None) -> tuple[Path, str, dict, list[str]]:
    """The manuscript of ``root`` with includes and variables resolved, as Quarto sees it.

    Returns (document path, resolved Markdown, the ``_quarto.yml`` settings, problems found).
    """
    problems: list[str] = []
    quarto = yaml.safe_load((root / "_quarto.yml").read_text()) or {}
    if document is None:
        render = (quarto.get("project") or {}).get("render") or sorted(
            p.name for p in root.glob("*.qmd")
        )
        if len(render) != 1:
            raise ManuscriptError(f"{root}: expected one .qmd document, found {render}")
        document = render[0]
    doc = root / document
    vars_path = root / "_variables.yml"
    if not vars_path.is_file():
        problems.append(f"{vars_path} does not exist (built by the workflow's variables rule)")
    variables = read_variables(root)
    text = resolve(doc, root, variables, problems, (doc.resolve(),))
    return doc, text, quarto, problems


def check(paper_dir: str | Path, document: str | None = None) -> dict:
    """Check the manuscript in ``paper_dir``; raise :class:`ManuscriptError` listing problems.

    Returns a summary (document, labels, references, citations, figures, variables used).
    """
    root = Path(paper_dir)
    doc, text, quarto, problems = load(root, document)
    used_vars = sorted(set(VAR_RE.findall(doc.read_text())))
    found = analyse(text)

    front = {}
    if text.startswith("---"):
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    bib = front.get("bibliography") or quarto.get("bibliography")
    keys: set[str] = set()
    for b in [bib] if isinstance(bib, str) else bib or []:
        if not (root / b).is_file():
            problems.append(f"bibliography '{b}' does not exist")
        else:
            keys |= bib_keys(root / b)
    if not bib:
        problems.append("no bibliography in the front matter or _quarto.yml")

    labels = found["labels"]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"label '{label}' is defined more than once")
    xrefs = [c for c in found["cites"] if c.startswith(XREF_PREFIXES)]
    cites = [c for c in found["cites"] if not c.startswith(XREF_PREFIXES)]
    for ref in sorted(set(xrefs) - set(labels)):
        problems.append(f"reference '@{ref}' has no label '{{#{ref}}}'")
    for label in sorted({x for x in labels if x.startswith(("fig-", "tbl-"))} - set(xrefs)):
        problems.append(f"'{label}' is never cross-referenced (@{label})")
    for key in sorted(set(cites) - keys):
        problems.append(f"citation '@{key}' is not in the bibliography")
    for img in found["images"]:
        if re.match(r"^[a-z]+://", img):
            continue
        if not (root / img).is_file():
            problems.append(f"figure file '{img}' does not exist")
    variables = read_variables(root)
    claims = claims_used(variables, used_vars, problems)
    every_var = VAR_RE.findall(doc.read_text())
    for key in sorted({k for k in every_var if k.startswith("claim.") and every_var.count(k) > 1}):
        problems.append(
            f"claim '{key}' is used {every_var.count(key)} times: a generated sentence is "
            "stated once (say it again in other words, or refer to where it is stated)"
        )
    problems += methods_against_runs(text, variables)
    problems += small_figure_text(text, root, quarto)
    if problems:
        raise ManuscriptError(
            f"manuscript check of {doc} failed ({len(problems)} problem(s)):\n  - "
            + "\n  - ".join(problems)
        )
    return {
        "document": str(doc),
        "labels": sorted(set(labels)),
        "cross_references": sorted(set(xrefs)),
        "citations": sorted(set(cites)),
        "figures": sorted(set(found["images"])),
        "variables_used": used_vars,
        "claims": claims,
        "unbacked": unbacked_sentences(doc.read_text()),
    }


#: Words of the Methods that name a method's setting, and the setting of the runs they need:
#: (pattern, ``settings.*`` variable, the value it must contain). The ``settings`` variables are
#: read from the runs' resolved configs (vaeinf.report.variables.run_settings).
METHODS_WORDS = [
    (r"adaptive contrast", "settings.avb.adaptive_contrast", "true"),
    (
        r"backpropagat\w* through (?:its|the) refinement",
        "settings.semi_amortized.backprop_through_refinement",
        "true",
    ),
    (r"\bplanar\b", "settings.flow.flow", "planar"),
    (r"\bradial\b", "settings.flow.flow", "radial"),
]


def methods_section(text: str) -> str:
    """The resolved Methods section: from its level-1 heading to the next one."""
    m = re.search(r"^# Methods\b.*?$(?P<body>.*?)(?=^# )", text, re.M | re.S)
    return m["body"] if m else ""


def read_variables(root: Path) -> dict[str, object]:
    """The flattened ``_variables.yml`` of the paper in ``root`` (empty when there is none)."""
    path = root / "_variables.yml"
    return flatten_variables(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def methods_against_runs(text: str, variables: dict[str, object]) -> list[str]:
    """A setting the Methods name (:data:`METHODS_WORDS`) that no run of the study used."""
    if "settings" not in variables:
        return []
    body, problems = methods_section(text), []
    for pattern, key, value in METHODS_WORDS:
        found = re.search(pattern, body)
        used = str(variables.get(key, "n/a"))
        if found and value not in re.split(r",? or |, ", used):
            problems.append(
                f"the Methods say '{found[0]}', but the runs used {key.removeprefix('settings.')}"
                f" = {used} (not {value}); describe what ran"
            )
    return problems


#: The smallest text a printed figure may have (pt).
MIN_PRINT_PT = 7.0
PAPER_WIDTH_IN = {"a4": 8.27, "us-letter": 8.5, "letter": 8.5, "a5": 5.83}
UNITS_IN = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4, "pt": 1 / 72}
IMAGE_RE = re.compile(r"\]\((?P<path>[^)\s]+\.png)\)(?:\{(?P<attrs>[^}]*)\})?")
#: A ``::: {layout-ncol=N}`` div (its figures side by side, N to a row) and its body.
LAYOUT_RE = re.compile(
    r"^(?P<fence>:{3,})[ \t]*\{[^}\n]*layout-ncol\s*=\s*\"?(?P<n>\d+)\"?[^}\n]*\}[ \t]*$"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def text_width_in(quarto: dict) -> float:
    """The PDF's text width (inches): the Typst paper's width less its horizontal margins."""
    typst = ((quarto.get("format") or {}).get("typst")) or {}
    width = PAPER_WIDTH_IN.get(str(typst.get("papersize", "a4")).lower(), 8.27)
    margin = (typst.get("margin") or {}).get("x", "2.5cm")
    m = re.fullmatch(r"\s*([\d.]+)\s*(in|cm|mm|pt)\s*", str(margin))
    return width - 2 * (float(m[1]) * UNITS_IN[m[2]] if m else 1.0)


def png_info(path: Path) -> tuple[float, float, dict[str, str]]:
    """(width in pixels, pixels per inch, text chunks) of a PNG; (nan, nan, {}) when unreadable."""
    import struct
    import zlib

    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return math.nan, math.nan, {}
    pos, width, ppi, texts = 8, math.nan, math.nan, {}
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
        elif kind == b"pHYs" and body[8] == 1:  # pixels per metre
            ppi = struct.unpack(">I", body[:4])[0] * 0.0254
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        pos += 12 + n
    return float(width), ppi, texts


def small_figure_text(text: str, root: Path, quarto: dict) -> list[str]:
    """Figures whose smallest text (recorded by vaeinf.report.figures.style.save) prints below
    :data:`MIN_PRINT_PT` in the PDF: its size × the printed width (the image's ``width=`` share
    of the text width, or its own size capped at the text width; in a ``layout-ncol=N`` row,
    its share of a 1/N cell) / the figure's width."""
    from vaeinf.report.figures.style import MIN_FONT_KEY

    text_w, problems = text_width_in(quarto), []
    layouts = [(d.start("body"), d.end("body"), int(d["n"])) for d in LAYOUT_RE.finditer(text)]
    for m in IMAGE_RE.finditer(text):
        path = root / m["path"]
        if not path.is_file():
            continue
        px, ppi, meta = png_info(path)
        if MIN_FONT_KEY not in meta or not (px > 0 and ppi > 0):
            continue
        fig_w = px / ppi
        share = re.search(r"width\s*=\s*\"?([\d.]+)%", m["attrs"] or "")
        # In a row of N figures a width (else the whole cell) is a share of the cell.
        ncol = next((n for a, b, n in layouts if a <= m.start() < b), None)
        if ncol:
            printed = text_w * (float(share[1]) if share else 100.0) / 100 / ncol
        else:
            printed = text_w * float(share[1]) / 100 if share else min(fig_w, text_w)
        pt = float(meta[MIN_FONT_KEY]) * printed / fig_w
        if pt < MIN_PRINT_PT:
            problems.append(
                f"figure '{m['path']}': its smallest text prints at {pt:.1f} pt (< "
                f"{MIN_PRINT_PT:g} pt): {float(meta[MIN_FONT_KEY]):g} pt on a {fig_w:.1f} in "
                f"figure shown {printed:.1f} in wide; enlarge the text or narrow the figure"
            )
    return problems


def claims_used(variables: dict, used: list[str], problems: list[str]) -> dict[str, dict]:
    """{claim key: {"text", "basis"}} of every ``claim.*`` variable the text uses, the phrase
    and the numbers behind it (``basis.*``, see :mod:`vaeinf.report.claims`), from the flattened
    ``variables``; a used claim that is missing, or has no basis, is a problem."""
    out = {}
    for key in used:
        if not key.startswith("claim."):
            continue
        basis_key = "basis." + key.removeprefix("claim.")
        if key not in variables:
            problems.append(
                f"claim '{key}' is used by the text but missing from _variables.yml (the claims "
                "are computed by vaeinf.report.claims from the runs)"
            )
            continue
        if key != "claim.rule" and basis_key not in variables:
            problems.append(f"claim '{key}' has no '{basis_key}' (the numbers behind it)")
        out[key] = {"text": str(variables[key]), "basis": str(variables.get(basis_key, ""))}
    return out


#: Words that state a direction or a comparison; a Results or Discussion sentence with one of
#: them and no claim variable is listed for review in the check's report.
DIRECTION_RE = re.compile(
    r"\b(improv\w*|grow\w*|shrink\w*|smaller|larger|best|better|worse|linear\w*|"
    r"increas\w*|decreas\w*|tighten\w*|loose\w*)\b",
    re.IGNORECASE,
)


def unbacked_sentences(qmd: str) -> list[str]:
    """Sentences of the Results and Discussion sections (raw text) with a direction word and
    no ``claim.*`` variable: methodological prose, or a claim the runs do not back."""
    body = re.split(r"^# ", qmd, flags=re.MULTILINE)
    sections = [b for b in body if b.startswith(("Results", "Discussion"))]
    out = []
    for section in sections:
        # Prose paragraphs only: no captions, figures, includes, divs or tables.
        paragraphs = [
            p
            for p in re.split(r"\n\s*\n", section)
            if not p.lstrip().startswith((":", "![", "{{<", "|", "`", "#", "Results", "Discussion"))
        ]
        text = re.sub(r"\s+", " ", " ".join(paragraphs))
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z@])", text):
            if DIRECTION_RE.search(sentence) and "var claim." not in sentence:
                out.append(sentence.strip()[:200])
    return out


def write_check(paper_dir: str | Path, out: str | Path) -> dict:
    """Run :func:`check` and write its summary as the check rule's output."""
    summary = check(paper_dir)
    lines = ["manuscript check: OK"] + [
        f"{k}: {', '.join(v) if isinstance(v, list) else v}"
        for k, v in summary.items()
        if k not in ("claims", "unbacked")
    ]
    lines += ["", f"claims ({len(summary['claims'])}), each with the numbers behind it:"]
    for key, c in summary["claims"].items():
        lines += [f"- {key}: {c['text']}", f"    basis: {c['basis']}"]
    lines += [
        "",
        "Results/Discussion sentences with a direction word and no claim variable (review: "
        f"methodological prose only) ({len(summary['unbacked'])}):",
    ]
    lines += [f"- {s}" for s in summary["unbacked"]]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vaeinf.report.paper.check", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check the manuscript in PAPER_DIR (no Quarto needed)")
    c.add_argument("paper_dir", nargs="?", default="paper")
    args = p.parse_args(argv)
    try:
        summary = check(args.paper_dir)
    except (ManuscriptError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"manuscript check: OK ({len(summary['cross_references'])} cross-references, "
        f"{len(summary['figures'])} figures, {len(summary['citations'])} citations, "
        f"{len(summary['variables_used'])} variables, {len(summary['claims'])} claims)"
    )
    for key, c in summary["claims"].items():
        print(f"- {key}: {c['text']}\n    basis: {c['basis']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
