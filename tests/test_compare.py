import json

from harness.cli import main


def write(path, figures):
    base = {"benchmark": "s", "mixer": "standard", "impl": "torch", "mode": "forward", "batch": 1, "d_model": 8,
            "n_heads": 2, "dtype": "float32", "seed": 0, "hparams": {}, "status": "ok"}
    path.write_text("".join(json.dumps({**base, "seq_len": n, "metric": m, "value": v}) + "\n"
                            for (n, m), v in figures.items()))
    return str(path)


FIG = {(64, "flops"): 1000, (64, "peak_tensor_bytes"): 4096, (64, "time_s"): 0.01, (128, "flops"): 4000}


def test_identical_is_ok(tmp_path, capsys):
    assert main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", FIG)]) == 0


def test_timings_are_not_gated(tmp_path):
    assert main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", {**FIG, (64, "time_s"): 9.0})]) == 0


def test_moved_figure_beyond_tolerance_fails(tmp_path, capsys):
    new = {**FIG, (64, "peak_tensor_bytes"): 4200}
    assert main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", new)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "peak_tensor_bytes" in out and "increased" in out
    assert main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", new), "--tolerance", "0.05"]) == 0


def test_missing_figure_fails(tmp_path, capsys):
    new = {k: v for k, v in FIG.items() if k != (128, "flops")}
    assert main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", new)]) == 1
    assert "missing in new run" in capsys.readouterr().out


def test_baseline_keeps_only_deterministic_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write(run / "results.jsonl", FIG)
    assert main(["baseline", str(run), str(tmp_path / "base.jsonl")]) == 0
    kept = [json.loads(l)["metric"] for l in (tmp_path / "base.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["flops", "flops", "peak_tensor_bytes"]
