"""End to end through the command line: list, dry run, run with report and plots, report rebuild."""
import subprocess
import sys
from pathlib import Path

import architectures

REPO = Path(__file__).resolve().parent.parent


def harness(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_list_mixers_shows_specs():
    out = harness("list", "mixers").stdout
    for name in architectures.list_mixers():
        assert name in out
    assert "O(n^2 d)" in out and "arXiv:2205.14135" in out and "softmax attention" in out
    assert harness("list", "mixers", "*window*").stdout.count("\n") == 3  # header, rule, one row


def test_list_suites_and_benchmarks():
    assert "suites/long_context.yaml" in harness("list", "suites").stdout
    assert "scaling" in harness("list", "benchmarks").stdout


def test_dry_run_lists_cells():
    out = harness("run", "suites/smoke.yaml", "--dry-run", "--device", "cpu", "--only", "linear").stdout
    assert "scaling/linear[torch]/forward/n=128" in out and out.strip().endswith("(dry run: nothing measured)")
    assert "standard" not in out


def test_run_writes_results_report_and_plots(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text("""\
suite: tiny
mixers: [standard, flash, linear]
timing: {warmup: 0, min_run_time_s: 0.001, min_repeats: 2, max_time_s: 0.2}
benchmarks:
  - kind: scaling
    modes: [forward, decode]
    sweep: {seq_len: [32, 64, 128], d_model: [32], n_heads: [2]}
  - kind: scaling
    name: scaling_long
    description: Linear attention alone, longer.
    mixers: [linear]
    sweep: {seq_len: [64, 256], d_model: [32], n_heads: [2]}
    params: {metrics: [time], crossover_against: []}
""")
    out = tmp_path / "out"
    harness("run", str(suite), "--device", "cpu", "--out", str(out), "--no-progress")
    for name in ("results.jsonl", "env.json", "suite.yaml", "specs.json", "report.md"):
        assert (out / name).exists(), name
    assert len(list((out / "plots").glob("*.png"))) >= 2
    report = (out / "report.md").read_text()
    for heading in ("## Environment", "### Exponents: claimed vs measured", "### Crossover lengths",
                    "### Decode state at the longest length", "![scaling time](plots/scaling-time.png)"):
        assert heading in report
    # the second entry: its description under its heading, and no crossover section (crossover_against: [])
    second = report[report.index("## Benchmark `scaling_long` (scaling)"):]
    assert second.split("\n")[2] == "Linear attention alone, longer."
    assert report.count("### Crossover lengths") == 1 and "### Crossover lengths" not in second
    from harness.results import read_rows

    rows = read_rows(out / "results.jsonl")  # the journal's reader: rows only, no commit markers
    assert rows and {r["status"] for r in rows} == {"ok"}
    (out / "report.md").unlink()
    harness("report", str(out))
    assert (out / "report.md").read_text() == report
    # a second run into the same directory must not mix results
    proc = harness("run", str(suite), "--device", "cpu", "--out", str(out), check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
