"""The paper's Markdown tables, one module per table, each with a ``make(summary, methods)``
returning the table's Markdown. The workflow's table rule depends on the table's own module
(and :mod:`vaeinf.tables.format`), so editing one table rebuilds only that one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vaeinf.results import atomic_write_text
from vaeinf.tables import active_units, collapse, nll, time

#: table name -> function of (summary data frame, method order) returning Markdown
TABLES: dict[str, Callable[..., str]] = {
    m.__name__.rsplit(".", 1)[-1]: m.make for m in (nll, active_units, collapse, time)
}


def write_table(name: str, summary_csv: str | Path, out: str | Path, methods=None) -> None:
    """Write table ``name`` of the summary table at ``summary_csv`` to ``out``."""
    atomic_write_text(out, TABLES[name](pd.read_csv(summary_csv), methods))
