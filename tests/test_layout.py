"""The package's layering: no import cycle, light modules that never load torch, registries that
agree with the names, and a results table that is a plain flattening of metrics.json."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaeinf import names
from vaeinf.report import tidy as aggregate

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "vaeinf"

#: The layers, each allowed to import only the layers before it (and itself).
LAYERS = {
    "base": {"vaeinf", "vaeinf.names", "vaeinf.errors", "vaeinf.config", "vaeinf.rundir"},
    "core": {"vaeinf.core"},
    "evaluation": {"vaeinf.evaluation"},
    "study": {"vaeinf.study"},
    "report": {"vaeinf.report"},
}
#: Allowed imports of each layer (the CLI sits on top of everything and is not listed).
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "evaluation": {"base", "core", "evaluation"},
    "study": {"base", "core", "evaluation", "study"},
    "report": {"base", "study", "report"},
}


def layer(module: str) -> str | None:
    for name, roots in LAYERS.items():
        if any(module == r or (r != "vaeinf" and module.startswith(r + ".")) for r in roots):
            return name
    return None


#: Modules the workflow imports when it parses (a dry run): none of them may load torch, nor
#: may any module of the report.
LIGHT = [
    "vaeinf.config",
    "vaeinf.names",
    "vaeinf.errors",
    "vaeinf.rundir",
    "vaeinf.core.downloads",
    "vaeinf.study.grid",
    "vaeinf.study.cost",
    "vaeinf.study.jobserver",
    "vaeinf.study.jobs",
    *sorted(
        ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for p in (SRC / "vaeinf" / "report").rglob("*.py")
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """vaeinf modules imported at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vaeinf")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaeinf"):
            out.add(node.module)
            # `from vaeinf.report.figures import style` imports the submodule
            # vaeinf.report.figures.style
            out |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PKG.rglob("*.py")}
    return {m for m in out if m in modules and m != here}


def test_no_import_cycle():
    graph = {module_name(p): top_level_imports(p) for p in PKG.rglob("*.py")}
    done, active = set(), []

    def visit(m):
        if m in active:
            cycle = active[active.index(m) :] + [m]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        active.append(m)
        for dep in sorted(graph[m]):
            if dep.startswith(m + "."):  # a package importing its own submodules
                continue
            visit(dep)
        active.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert "vaeinf.config" in graph and graph["vaeinf.config"] <= {"vaeinf.names", "vaeinf.errors"}


def imports_anywhere(path: Path) -> set[str]:
    """vaeinf modules imported anywhere in a file (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vaeinf")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaeinf"):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_layers_import_only_the_layers_below():
    """base <- core <- evaluation <- study; report reads the base and the study's grid only."""
    bad = []
    for path in PKG.rglob("*.py"):
        here = layer(module_name(path))
        if here is None:  # the CLI
            continue
        for dep in imports_anywhere(path):
            there = layer(dep)
            if there is not None and there not in ALLOWED[here]:
                bad.append(f"{module_name(path)} ({here}) imports {dep} ({there})")
    assert not bad, bad
    assert layer("vaeinf.cli") is None and layer("vaeinf.core.methods.base") == "core"


def test_light_modules_never_load_torch():
    """Each light module, imported alone in a fresh interpreter, leaves torch unloaded."""
    code = (
        "import sys, importlib\n"
        f"for m in {LIGHT!r}:\n"
        "    before = set(sys.modules)\n"
        "    importlib.import_module(m)\n"
        "    heavy = sorted(k for k in set(sys.modules) - before if k.split('.')[0] in "
        "('torch', 'zuko'))\n"
        "    assert not heavy, (m, heavy[:3])\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SRC)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_registries_list_exactly_the_names():
    from vaeinf.config import METHOD_OPTIONS
    from vaeinf.core.data import LOADERS
    from vaeinf.core.downloads import DOWNLOADS
    from vaeinf.core.methods import REGISTRY

    assert tuple(REGISTRY) == tuple(names.METHODS) == tuple(METHOD_OPTIONS)
    assert tuple(LOADERS) == names.DATASETS == tuple(DOWNLOADS)
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.default_objective in names.OBJECTIVES
        assert cls.default_objective == names.DEFAULT_OBJECTIVES[name]
    assert tuple(names.LABELS) == tuple(names.METHODS)
    for estimators in names.METHODS.values():
        assert set(estimators) <= set(names.ESTIMATORS)


def metrics_doc(**extra) -> dict:
    m = {
        "dataset": "digits",
        "method": "vae",
        "K": 5,
        "seed": 1,
        "test_nll": {"K": 100, "mean": 25.0, "stderr": 0.1, "n": 50},
        "bounds": [
            {"split": "test", "K": 5, "mean": -26.0, "stderr": 0.1, "n": 50},
            {"split": "test", "K": 100, "mean": -25.0, "stderr": 0.1, "n": 50},
        ],
        "active_units": {"count": 3, "threshold": 0.01, "variance": [0.5, 0.2, 0.1, 0.0]},
        "collapse": {"kl_per_dim": [1.0, 0.5, 0.2, 0.0], "kl_total": 1.7},
        "bound_gap": {"mean": 0.8, "stderr": 0.05, "n": 50},
        "per_point": {"log_px_is": [-24.0, -26.0], "log_px_ais": [-23.9]},
        **extra,
    }
    config = {
        "dataset": "digits",
        "method": "vae",
        "K": 5,
        "seed": 1,
        "model": {"hidden": [64, 64]},
        "method_options": {"steps": 5, "made_hidden": [32, 32]},
        "train": {"lr": 0.003},
    }
    return {"metrics": m, "config": config, "provenance": {"device": "cpu"}}


def test_a_new_scalar_metric_becomes_a_summary_column(tmp_path):
    """The evaluator adds a metric; the aggregate shows it with no change of its own."""
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics_doc(brand_new={"value": 4.5, "n": 7, "per_point": [1, 2]})))
    summary, bounds, per_dim, per_point = aggregate.collect([path])
    row = summary.iloc[0]
    assert row["brand_new.value"] == 4.5 and row["brand_new.n"] == 7
    assert "brand_new.per_point" not in summary  # lists go to the long tables, not the summary
    # One name per value: the dotted paths the paper reads, the columns derived from the long
    # tables, and the config's lists as JSON and its method options flattened.
    assert row["test_nll.mean"] == 25.0 and row["active_units.count"] == 3
    assert row["test_LK"] == -26.0 and row["bound_gap"] == pytest.approx(0.8)
    assert row["latent"] == 4 and row["config.train.lr"] == 0.003
    assert row["config.model.hidden"] == "[64,64]"
    assert row["config.method_options.steps"] == 5
    assert row["config.method_options.made_hidden"] == "[32,32]"
    assert not {"nll", "active_units", "lr", "config.dataset", "config.K"} & set(summary)
    assert summary.columns.is_unique
    assert len(bounds) == 2 and list(per_dim["kl"]) == [1.0, 0.5, 0.2, 0.0]
    # Per-point values go to their own long table, a row per (run, quantity, point).
    assert len(per_point) == 3 and set(per_point["quantity"]) == {"log_px_is", "log_px_ais"}
    assert list(per_point[per_point["quantity"] == "log_px_is"]["value"]) == [-24.0, -26.0]
    assert "per_point.log_px_is" not in summary


def test_the_aggregate_refuses_runs_whose_files_disagree(tmp_path):
    """A run's metrics.json is aggregated only beside the model.pt it evaluated (not older than
    it) and the config.yaml of the training identity it was computed for: one line names every
    other run, and no table is written."""
    import os

    import yaml

    from vaeinf.config import RunConfig
    from vaeinf.errors import DataError

    def run(name: str, cfg: RunConfig, model: bool = True) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(cfg.training()))
        if model:
            (d / "model.pt").write_bytes(b"weights")
        doc = metrics_doc() | {"config": cfg.to_dict()}
        (d / "metrics.json").write_text(json.dumps(doc))
        return d / "metrics.json"

    cfg = RunConfig(dataset="digits", method="vae", K=5, seed=1)
    good = run("good", cfg)
    assert aggregate.disagreement(good) is None
    # evaluation and operational settings are no part of the identity
    doc = json.loads(good.read_text())
    doc["config"]["eval"]["nll_k"] = 7
    doc["config"]["train"]["device"] = "cpu"
    good.write_text(json.dumps(doc))
    assert aggregate.disagreement(good) is None

    missing = run("missing", cfg, model=False)
    older = run("older", cfg)
    os.utime(older, (1, 1))
    other = run("other", cfg)
    (other.parent / "config.yaml").write_text(yaml.safe_dump(RunConfig(K=7).training()))
    assert aggregate.disagreement(missing) == "no model.pt"
    assert aggregate.disagreement(older) == "metrics.json older than model.pt"
    assert "another training identity" in aggregate.disagreement(other)

    out = {k: tmp_path / f"{k}.csv" for k in ("summary", "bounds", "per_dim", "cost", "per_point")}
    with pytest.raises(DataError) as e:
        aggregate.write_aggregate([good, missing, older, other], [], **out)
    message = str(e.value)
    assert "\n" not in message and message.startswith("refusing to aggregate 3 run(s)")
    assert all(str(p.parent) in message for p in (missing, older, other))
    assert str(good.parent) + " " not in message
    assert not any(p.exists() for p in out.values())
