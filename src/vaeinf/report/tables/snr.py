"""The gradient's signal-to-noise ratio by variant and training K: the fitted slope of log SNR
against log K of the trained model, for the encoder and the decoder, and the SNR at the
training K at the start and at the end of training (:mod:`vaeinf.evaluation.snr`), each the
bias-corrected root mean square over the part's parameters, mean ± s.d. over seeds.
"""

from __future__ import annotations

import pandas as pd

from vaeinf.report.tables.format import cell_table, mean_sd

#: The aggregate tables it reads, in the order of make's arguments.
INPUT = ("summary",)

SLOPE = "snr.slope.{part}.rms.value"
AT = "snr.training.{stage}.{part}.rms"


def _arrow(g: pd.DataFrame, part: str) -> str:
    start, end = (AT.format(stage=s, part=part) for s in ("start", "end"))
    if start not in g or end not in g or g[end].isna().all():
        return "—"
    return f"{mean_sd(g[start])} → {mean_sd(g[end])}"


def make(summary: pd.DataFrame, methods: list[str] | None = None) -> str:
    """Rows (dataset,) variant, K; columns the slopes and the SNR from start to end."""
    header = [
        "slope, encoder",
        "slope, decoder",
        "SNR start → end, encoder",
        "SNR start → end, decoder",
    ]

    def cells(g: pd.DataFrame) -> list[str]:
        return [
            mean_sd(g[SLOPE.format(part=p)]) if SLOPE.format(part=p) in g else "—"
            for p in ("encoder", "decoder")
        ] + [_arrow(g, p) for p in ("encoder", "decoder")]

    return cell_table(summary, header, cells, methods)
