"""Each ablation against its base method at the same K: rows variant x K, cells the difference
(variant − base) in test NLL, in the training bound L_K (test), in active units, paired over
seeds (mean ± s.e., :func:`vaeinf.report.claims.paired`), and in seconds per epoch from the cost
rule (one timing each; the range from the step-time quartiles, see
:func:`vaeinf.report.claims.cost_difference`).
"""

from __future__ import annotations

import pandas as pd

from vaeinf.report import claims
from vaeinf.report.tables.format import markdown_table, order

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary", "cost")

#: (header, summary column, unit, digits) of the paired differences.
COLUMNS = [
    ("Δ test NLL", "test_nll.mean", "", 2),
    ("Δ L~K~ (test)", "test_LK", "", 2),
    ("Δ active units", "active_units.count", "", 1),
]


def make(summary: pd.DataFrame, cost: pd.DataFrame, methods: list[str] | None = None) -> str:
    """Rows (dataset,) variant, K; its base; one column per difference."""
    df = order(summary, methods)
    named = df[df["variant"] != df["method"]]
    base_label = dict(zip(df["variant"], df["label"], strict=False))
    multi = df["dataset"].nunique() > 1
    header = (
        (["Dataset"] if multi else [])
        + ["Ablation", "Base", "K"]
        + [h for h, *_ in COLUMNS]
        + ["Δ s/epoch"]
    )
    rows = []
    keys = ["dataset", "variant", "method", "label", "K"]
    for (dataset, variant, method, label, K), _ in named.groupby(keys, sort=False):
        cells = []
        for _h, column, unit, digits in COLUMNS:
            est = claims.paired(
                df,
                column,
                {"dataset": dataset, "variant": method, "K": K},
                {"dataset": dataset, "variant": variant, "K": K},
            )
            cells.append(est.pm(unit, digits) if est.n else "—")
        c = claims.cost_difference(cost, dataset, method, variant, K)
        cells.append(c["text"] if c else "—")
        rows.append(
            ([dataset] if multi else []) + [label, base_label.get(method, method), str(K)] + cells
        )
    if not rows:
        rows = [([""] if multi else []) + ["(no ablations in this study)", "—", "—"]]
        rows[0] += ["—"] * (len(COLUMNS) + 1)
    align = ["l"] * (3 if multi else 2) + ["r"] * (2 + len(COLUMNS))
    return markdown_table(header, rows, align)
