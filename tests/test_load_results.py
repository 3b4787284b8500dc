"""``harness.load_results``: a run's rows as a tidy DataFrame with typed columns."""
from pathlib import Path

import pandas as pd

import harness

RUN = Path(__file__).resolve().parent.parent / "reports" / "master_table-cpu"


def test_a_committed_run_loads_with_typed_columns():
    df = harness.load_results(RUN)
    assert len(df) == len(harness.results.read_rows(RUN / "results.jsonl"))  # committed rows (no journal markers)
    assert df["seq_len"].dtype == "Int64" and df["d_model"].dtype == "Int64"
    assert df["value"].dtype == "float64"
    for c in ("benchmark", "mixer", "mode", "metric", "dtype"):
        assert isinstance(df[c].dtype, pd.CategoricalDtype), c
    from harness.results import STATUSES

    assert list(df["status"].cat.categories) == list(STATUSES) and "crashed" in STATUSES
    assert str(df["time_utc"].dtype).startswith("datetime64") and df["best"].dtype == "boolean"
    # tidy: one row per measurement, so a figure is one filter away
    t = df[(df["benchmark"] == "scaling") & (df["metric"] == "time_s") & (df["mixer"] == "standard")
           & (df["mode"] == "forward")]
    assert t["seq_len"].is_unique and (t["value"] > 0).all()
