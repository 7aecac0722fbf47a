"""The paper's Markdown tables, one module per table, each with a ``make(summary, methods)``
returning the table's Markdown: a row per variant (its display name, column ``label``, see
:func:`vaeinf.report.tidy.labelled`), in the order of the display names ``methods``. The
workflow's table rule depends on the table's own module (and
:mod:`vaeinf.report.tables.format`), so editing one table rebuilds only that one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vaeinf.report.tables import ablations, active_units, collapse, gaps, nll, time
from vaeinf.report.tidy import display_order, labelled
from vaeinf.rundir import atomic_write_text

_MODULES = (nll, gaps, active_units, collapse, time, ablations)

#: table name -> function of (the tables it reads..., method order) returning Markdown
TABLES: dict[str, Callable[..., str]] = {m.__name__.rsplit(".", 1)[-1]: m.make for m in _MODULES}

#: table name -> the aggregate tables it reads ("summary", "cost"), in the order of its arguments
INPUTS: dict[str, tuple[str, ...]] = {m.__name__.rsplit(".", 1)[-1]: m.INPUT for m in _MODULES}


def write_table(name: str, inputs: dict, out: str | Path, variants=None, labels=None) -> None:
    """Write table ``name`` from ``inputs`` ({"summary"|"cost": csv}) to ``out``: rows in the
    order of ``variants``, named by ``labels`` (variant -> display name)."""
    frames = [labelled(pd.read_csv(inputs[k]), labels) for k in INPUTS[name]]
    atomic_write_text(out, TABLES[name](*frames, display_order(variants, labels)))
