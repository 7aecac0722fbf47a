"""The cost rule's timing (vaeinf.study.cost): one worker process per contender, rotating rounds."""

from __future__ import annotations

import pandas as pd

from vaeinf.study import cost
from vaeinf.study.grid import run_config


def test_cost_schema_and_growth_with_k(tmp_path):
    config = {
        "datasets": ["digits"],
        "methods": ["vae", "iwae"],
        "Ks": [1, 256],
        "seeds": [3],
        "run": {"model": {"hidden": [16], "latent": 4}, "train": {"device": "cpu"}},
    }
    contenders = cost.study_contenders(config, "digits")
    assert list(contenders) == [("vae", 1), ("vae", 256), ("iwae", 1), ("iwae", 256)]
    # A contender is what changes its step's time: no seed, learning rate or evaluation.
    step = contenders[("iwae", 256)]
    assert step == cost.step_identity(run_config(config, "digits", "iwae", 256, 3))
    assert step["model"]["hidden"] == [16] and step["train"]["device"] == "cpu"
    assert "seed" not in step and "eval" not in step and "lr" not in step["train"]
    rows = cost.measure(contenders, rounds=4, warmup=1, steps=3, min_seconds=0.2)
    out = tmp_path / "cost.csv"
    cost.write_cost(rows, out)
    df = pd.read_csv(out)
    assert list(df.columns) == cost.COLUMNS and len(df) == 4
    assert (df["timed_steps"] >= 4 * 3).all() and (df["batches_per_epoch"] == 14).all()
    assert (df["reference"] == "vae K=1").all()
    ref = df[(df["method"] == "vae") & (df["K"] == 1)].iloc[0]
    assert ref["ratio"] == 1.0
    # The time floor: a step of this tiny VAE takes well under 0.2 / 3 s, so it times more
    # than 3 steps a round.
    assert ref["timed_steps"] > 4 * 3
    for _, r in df.iterrows():
        assert r["step_s"] <= r["step_s_q1"] <= r["step_s_median"] <= r["step_s_q3"]
        assert abs(r["epoch_s_fastest"] / (r["step_s"] * r["batches_per_epoch"]) - 1) < 1e-5
    for method in ("vae", "iwae"):  # 256 samples per point cost more than one
        by_k = df[df["method"] == method].set_index("K")["epoch_s_fastest"]
        assert by_k[256] > by_k[1]
