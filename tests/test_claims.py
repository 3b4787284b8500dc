"""The claims file and the Master Comparison Table: verdicts follow from the figures (synthetic rows with known
exponents, perplexities, accuracies), missing methods are `not measurable here`, and the report renders the table."""
import json
import re

import pytest
import yaml

import architectures
from harness.benchmarks import BENCHMARKS
from harness.claims import (DEFAULT_CLAIMS, FAILS, HOLDS, NOT_MEASURABLE, ClaimsFile, dump_claims, evaluate,
                            load_claims, registry_specs, table_cells)
from harness.report.build import write_report
from harness.report.run import RunData
from harness.results import append_rows

LENGTHS = (1024, 2048, 4096)


def _norm(text: str | None) -> str:
    return (text or "").lower().replace(" ", "").replace("^", "").replace("²", "2")


def test_claims_file_loads_and_lists_the_guide_table():
    cf = load_claims()
    assert [m.method for m in cf.methods] == ["standard", "flash", "sliding_window", "linear", "linformer",
                                              "reformer", "gla", "deltanet", "mamba", "kda"]
    ids = {c.id for c in cf.claims}
    assert {"flash_same_math", "flash_linear_memory", "flash_faster_forward", "mamba_weaker_recall",
            "quality_order_deltanet_gla_linear"} <= ids
    for c in cf.claims:
        assert c.text and c.source and c.benchmark


@pytest.mark.parametrize("name", [m.method for m in load_claims().methods])
def test_the_table_cells_come_from_the_specs(name):
    """The claims file states no cell of the guide's table: each comes from the method's MixerSpec (one source)."""
    raw = next(m for m in yaml.safe_load(DEFAULT_CLAIMS.read_text())["methods"] if m["method"] == name)
    assert "as_written" not in raw.get("time", {}) and "exponent" not in raw.get("memory", {})
    assert "as_written" not in raw.get("quality", {}) and "percent" not in raw.get("quality", {})
    spec = architectures.get_mixer(name).spec
    row = load_claims().method(name)
    assert _norm(spec.claimed_time) == _norm(row.time.as_written)
    assert _norm(spec.claimed_memory) == _norm(row.memory.as_written)
    assert _norm(spec.claimed_quality) == _norm(row.quality.as_written)
    assert spec.time_exponent == row.time.exponent
    spec_memory = spec.memory_exponent if row.memory.measured_as == "prefill" else spec.state_exponent
    assert spec_memory == row.memory.exponent


def test_quality_kinds_read_off_the_cells():
    cf = load_claims()
    assert cf.method("kda").quality.kind == "at_least" and cf.method("kda").quality.percent == 101
    assert cf.method("gla").quality.kind == "approx" and cf.method("gla").quality.percent == 98
    assert cf.method("standard").quality.kind == "reference" and cf.method("flash").quality.tolerance == 1.0


def test_a_claim_without_what_its_check_needs_is_rejected():
    raw = yaml.safe_load(DEFAULT_CLAIMS.read_text())
    raw["claims"][0].pop("against")
    with pytest.raises(ValueError, match="needs"):
        ClaimsFile.model_validate(_cells(raw))
    raw = yaml.safe_load(DEFAULT_CLAIMS.read_text())
    raw["claims"].append(dict(raw["claims"][0]))
    with pytest.raises(ValueError, match="repeated"):
        ClaimsFile.model_validate(_cells(raw))


def _cells(raw):
    return table_cells(raw, registry_specs([m["method"] for m in raw["methods"]]))


# ---- a synthetic run --------------------------------------------------------------------------------------------

def _row(bench, mixer, metric, value, mode="forward", seq_len=1024, status="ok", **extra):
    return {"benchmark": bench, "mixer": mixer, "mixer_name": mixer, "impl": "torch", "mode": mode,
            "seq_len": seq_len, "batch": 1, "d_model": 128, "n_heads": 4, "dtype": "float32", "seed": 0,
            "cell_id": f"{bench}/{mixer}/{mode}/n={seq_len}/{extra.get('n_pairs', '')}/{extra.get('lr', '')}",
            "metric": metric, "value": value, "unit": "", "status": status, "error": None, **extra}


def _scaling(mixer, t_exp, mem_exp, state_exp, t_scale=1.0, bench="scaling", lengths=LENGTHS):
    rows = []
    for n in lengths:
        t = t_scale * 1e-3 * (n / 1024) ** t_exp
        rows += [_row(bench, mixer, "time_s", t, seq_len=n), _row(bench, mixer, "tokens_per_s", n / t, seq_len=n),
                 _row(bench, mixer, "flops", 1e9 * (n / 1024) ** t_exp, seq_len=n),
                 _row(bench, mixer, "peak_tensor_bytes", 1e6 * (n / 1024) ** mem_exp, seq_len=n),
                 _row(bench, mixer, "time_s", 2 * t, mode="train", seq_len=n)]
        if state_exp is not None:
            rows.append(_row(bench, mixer, "state_bytes", 1e5 * (n / 1024) ** state_exp, mode="decode", seq_len=n))
    return rows


def _mqar(mixer, accs):
    rows = []
    for (n, p), acc in zip([(64, 4), (128, 8)], accs):
        for lr, a in [(1e-3, acc - 0.1), (3e-3, acc)]:
            rows.append(_row("mqar", mixer, "accuracy", a, mode="train", seq_len=n, n_pairs=p, lr=lr,
                             best=lr == 3e-3))
    return rows


def _make_run(tmp_path, ppl, flash_speed=3.0, missing=("mamba", "kda")):
    """standard: exponents 2/2/1; flash 2/1/1, `flash_speed` x faster; linear, gla, deltanet 1/1/0;
    sliding_window time exponent 1.6 (a claim that fails); linformer bidirectional; mamba and kda missing."""
    rows = (_scaling("standard", 2, 2, 1, t_scale=flash_speed) + _scaling("flash", 2, 1, 1)
            + _scaling("sliding_window", 1.6, 1, 0) + _scaling("linear", 1, 1, 0) + _scaling("gla", 1, 1, 0)
            + _scaling("deltanet", 1, 1, 0) + _scaling("reformer", 1, 1, None)
            + _scaling("linformer", 1, 1, None, bench="scaling_bidirectional")
            + _scaling("standard", 1.5, 2, None, bench="scaling_bidirectional"))  # not the causal figure
    rows += [_row("scaling", "linformer", None, None, status="skipped")]
    for m in missing:
        rows += [_row(b, m, None, None, status="missing") for b in ("scaling", "perplexity", "mqar")]
    for m, p in ppl.items():  # as the perplexity benchmark writes them: objective in `mode`, lr sweep with `best`
        mode = "masked_lm" if m.endswith("_bi") else "causal_lm"
        for lr, factor in [(1e-3, 1.2), (3e-3, 1.0)]:
            rows.append(_row("perplexity", m.removesuffix("_bi"), "val_ppl", p * factor, mode=mode, seq_len=256,
                             lr=lr, best=lr == 3e-3))
    rows += _mqar("standard", [1.0, 0.98]) + _mqar("linear", [0.6, 0.4]) + _mqar("flash", [1.0, 0.98])
    rows += [_row("equivalence", "flash", "max_rel_diff", 2e-7, seq_len=256),
             _row("equivalence", "flash", "max_rel_diff", 3e-7, seq_len=1024)]
    out = tmp_path / "run"
    out.mkdir()
    append_rows(out / "results.jsonl", rows)
    benchmarks = [{"kind": "scaling", "params": {"fit": {"last_points": 3}}},
                  {"kind": "scaling", "name": "scaling_bidirectional", "params": {"attention": "bidirectional"}},
                  {"kind": "perplexity"},
                  {"kind": "mqar"}, {"kind": "equivalence"}, {"kind": "claims"}]
    (out / "suite.yaml").write_text(yaml.safe_dump({"suite": {"suite": "synthetic", "mixers": ["*"],
                                                              "benchmarks": benchmarks}}))
    (out / "specs.json").write_text(json.dumps({}))
    dump_claims(load_claims(), out / "claims.yaml")  # as a run writes it when it starts (Claims.run_figures)
    return out


PPL = {"standard": 10.0, "flash": 10.0, "sliding_window": 10.1, "linear": 10.5, "gla": 10.2, "deltanet": 10.1,
       "reformer": 12.0, "standard_bi": 5.0, "linformer_bi": 5.2}


def _verdicts(out):
    methods, claims = evaluate(RunData.load(out), load_claims())
    return methods, claims.set_index("id")


def test_verdicts_follow_from_the_figures(tmp_path):
    methods, c = _verdicts(_make_run(tmp_path, PPL))
    v = c["verdict"].to_dict()
    assert v["standard_time"] == HOLDS and v["standard_memory"] == HOLDS
    assert c.loc["standard_time", "measured"].startswith("2.00")  # the causal entry's, not the bidirectional one
    assert v["flash_time"] == HOLDS and v["flash_memory"] == HOLDS and v["flash_linear_memory"] == HOLDS
    assert v["sliding_window_time"] == FAILS  # measured 1.6 vs claimed 1, beyond 0.25
    assert c.loc["sliding_window_time", "measured"].startswith("1.60")
    assert v["linear_time"] == v["gla_memory"] == v["deltanet_time"] == HOLDS
    # quality = 100 x 10 / ppl
    assert v["linear_quality"] == HOLDS and c.loc["linear_quality", "measured"].startswith("95.2%")
    assert v["reformer_quality"] == FAILS  # 83.3% vs ~97%
    assert v["flash_quality"] == HOLDS
    assert v["standard_quality"] == NOT_MEASURABLE  # the reference
    # the bidirectional method: its own scaling entry and a bidirectional standard
    assert v["linformer_time"] == HOLDS and c.loc["linformer_quality", "measured"].startswith("96.2%")
    assert v["linformer_quality"] == HOLDS
    assert v["quality_order_deltanet_gla_linear"] == HOLDS
    assert v["flash_same_math"] == HOLDS and c.loc["flash_same_math", "measured"].startswith("3.00e-07")
    assert v["flash_faster_forward"] == HOLDS and c.loc["flash_faster_forward", "measured"].startswith("3.00x")
    # missing methods and claims on them
    for cid in ("mamba_time", "mamba_memory", "mamba_quality", "kda_quality", "mamba_constant_state",
                "mamba_weaker_recall"):
        assert v[cid] == NOT_MEASURABLE, cid
    assert "not registered" in c.loc["mamba_time", "why"]
    row = methods.set_index("method").loc["Mamba (missing)"]
    assert row["time verdict"] == NOT_MEASURABLE and row["MQAR accuracy"] == "-"
    std = methods.set_index("method").loc["Standard"]
    assert std["MQAR accuracy"].startswith("0.990") and "n=4096" in std["tokens/s at longest n"]


def test_the_widest_fit_is_held_to_the_claim(tmp_path):
    """A method measured by two causal scaling entries is judged on the fit over the widest range of n."""
    out = _make_run(tmp_path, PPL)
    long = [1024, 2048, 4096, 8192, 16384]
    append_rows(out / "results.jsonl", _scaling("sliding_window", 1.0, 1, None, bench="scaling_long", lengths=long))
    suite = yaml.safe_load((out / "suite.yaml").read_text())
    suite["suite"]["benchmarks"].append({"kind": "scaling", "name": "scaling_long", "params": {"fit": {"last_points": 5}}})
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    _, c = _verdicts(out)
    # 1.6 over 1024..4096 in `scaling`, 1.0 over 1024..16384 in `scaling_long`: the latter is held to the claim
    assert c.loc["sliding_window_time", "verdict"] == HOLDS
    assert c.loc["sliding_window_time", "measured"] == "1.00 ± 0.00 (n 1024-16384)"
    # a method only the main entry measures keeps that entry's fit
    assert c.loc["linear_time", "measured"].endswith("(n 1024-4096)")


def test_a_speedup_is_read_within_one_entry(tmp_path):
    """Two causal entries time flash and standard: the speed-up comes from the one reaching the longest n, its
    lengths only (not pooled, no length listed twice)."""
    out = _make_run(tmp_path, PPL)  # `scaling`: standard 3x slower than flash at 1024..4096
    long = [2048, 4096, 8192]
    append_rows(out / "results.jsonl", _scaling("standard", 2, 2, None, t_scale=5.0, bench="scaling_long",
                                                lengths=long) + _scaling("flash", 2, 1, None, bench="scaling_long",
                                                                         lengths=long))
    suite = yaml.safe_load((out / "suite.yaml").read_text())
    suite["suite"]["benchmarks"].append({"kind": "scaling", "name": "scaling_long"})
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    _, c = _verdicts(out)
    assert c.loc["flash_faster_forward", "measured"] == \
        "5.00x at n=8192 (n=2048: 5.00x, 4096: 5.00x) in `scaling_long`; faster than claimed"


def test_failing_comparisons_are_reported_as_such(tmp_path):
    ppl = {**PPL, "deltanet": 10.4}  # deltanet below gla: the ordering claim fails
    _, c = _verdicts(_make_run(tmp_path, ppl, flash_speed=6.0))
    assert c.loc["quality_order_deltanet_gla_linear", "verdict"] == FAILS
    assert c.loc["flash_faster_forward", "verdict"] == FAILS
    assert "faster than claimed" in c.loc["flash_faster_forward", "measured"]


def test_weaker_recall_claim(tmp_path):
    out = _make_run(tmp_path, PPL, missing=("kda",))
    rows = _mqar("mamba", [0.7, 0.5])
    append_rows(out / "results.jsonl", rows)
    _, c = _verdicts(out)
    assert c.loc["mamba_weaker_recall", "verdict"] == HOLDS
    assert "mamba 0.600 vs standard 0.990" in c.loc["mamba_weaker_recall", "measured"]
    append_rows(out / "results.jsonl", _mqar("mamba", [1.0, 0.99]))  # a later, equal-to-standard figure
    _, c = _verdicts(out)
    assert c.loc["mamba_weaker_recall", "verdict"] == FAILS


def test_weaker_recall_is_not_measurable_when_the_baseline_did_not_learn(tmp_path):
    out = _make_run(tmp_path, PPL, missing=("kda",))
    rows = [r for r in (_mqar("standard", [0.3, 0.25]) + _mqar("mamba", [0.2, 0.2]))]
    for r in rows:
        r["cell_id"] += "/late"
    append_rows(out / "results.jsonl", rows)  # standard at 0.275 on average: the task was not learnt
    df = RunData.load(out)
    df.df = df.df[~((df.df["benchmark"] == "mqar") & ~df.df["cell_id"].str.endswith("/late"))]
    _, c = evaluate(df, load_claims())
    c = c.set_index("id")
    assert c.loc["mamba_weaker_recall", "verdict"] == NOT_MEASURABLE
    assert "not learnt" in c.loc["mamba_weaker_recall", "why"]


def test_report_renders_the_master_table(tmp_path):
    out = _make_run(tmp_path, PPL)
    text = write_report(out).read_text()
    assert "## The guide's Master Comparison Table, measured" in text
    assert (out / "claims.yaml").exists() and (out / "claims.csv").exists()
    assert "| Sliding Window " in text and "does not hold" in text
    # every markdown table row has as many cells as its header (no stray '|' inside a cell)
    for block in re.findall(r"((?:^\|.*\n)+)", text, flags=re.M):
        counts = {line.count("|") for line in block.strip().splitlines()}
        assert len(counts) == 1, block[:300]


def test_the_report_keeps_the_claims_the_run_was_checked_against(tmp_path):
    out = _make_run(tmp_path, PPL)
    run = RunData.load(out)
    entry = run.entries("claims")[0]
    section = BENCHMARKS.get("claims").report_section
    assert section(run, entry) and load_claims(out / "claims.yaml", {}) == load_claims()  # every cell stated
    raw = yaml.safe_load((out / "claims.yaml").read_text())
    raw["tolerances"]["quality_points"] = 0.1  # an edited copy in the run directory is what the report uses
    (out / "claims.yaml").write_text(yaml.safe_dump(raw))
    section(RunData.load(out), entry)
    claims = (out / "claims.csv").read_text()
    assert "abs(q - 95) <= 0.1 points" in claims
