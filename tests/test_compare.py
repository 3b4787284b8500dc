import json

import pytest

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


# ---- a gate that cannot pass on nothing (rc 2 with a message) --------------------------------------------------------

def _rc2(capsys, *argv, expect: str) -> None:
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert expect in err, err


def test_empty_baseline_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").write_text("")
    _rc2(capsys, str(tmp_path / "empty"), write(tmp_path / "b", FIG), expect="no result rows")


def test_garbage_baseline_is_an_error(tmp_path, capsys):
    (tmp_path / "junk").write_text("this is not json\n{\"half\": \n")
    _rc2(capsys, str(tmp_path / "junk"), write(tmp_path / "b", FIG), expect="not complete JSON result rows")
    (tmp_path / "bin").write_bytes(b"\x00\xff\xfe\n")
    _rc2(capsys, str(tmp_path / "bin"), write(tmp_path / "b", FIG), expect="not complete JSON result rows")


def test_schemaless_baseline_is_an_error(tmp_path, capsys):
    (tmp_path / "rows").write_text('{"a": 1}\n{"b": 2}\n')
    _rc2(capsys, str(tmp_path / "rows"), write(tmp_path / "b", FIG), expect="lack the column(s)")
    only_timings = {(64, "time_s"): 0.01}
    _rc2(capsys, write(tmp_path / "t", only_timings), write(tmp_path / "b", FIG), expect="no successful deterministic")


def test_non_numeric_figure_is_an_error(tmp_path, capsys):
    _rc2(capsys, write(tmp_path / "a", {(64, "flops"): "lots"}), write(tmp_path / "b", FIG), expect="not a number")


def test_nan_or_negative_tolerance_is_an_error(tmp_path, capsys):
    for bad in ("nan", "inf", "-0.1", "x"):
        with pytest.raises(SystemExit) as exc:
            main(["compare", write(tmp_path / "a", FIG), write(tmp_path / "b", FIG), "--tolerance", bad])
        assert exc.value.code == 2
    from harness.compare import CompareError, compare

    with pytest.raises(CompareError, match="finite"):
        compare(write(tmp_path / "a", FIG), write(tmp_path / "b", FIG), float("nan"))


def test_new_run_matching_nothing_is_an_error(tmp_path, capsys):
    other = {(999, "flops"): 1}
    _rc2(capsys, write(tmp_path / "a", FIG), write(tmp_path / "b", other), expect="none of the baseline's")
    (tmp_path / "e").write_text("")
    _rc2(capsys, write(tmp_path / "a", FIG), str(tmp_path / "e"), expect="no result rows")
    _rc2(capsys, write(tmp_path / "a", FIG), str(tmp_path / "nowhere"), expect="no results file")
