"""``harness ab``: the decision rule, bad input (exit 2), and end to end on a temporary git repository whose second
commit makes one operator deliberately slower: that cell, and only it, is flagged (exit 1), each side ran its own
revision's code, the worktrees are gone afterwards; the same revision against itself flags nothing (exit 0).

The end-to-end tests measure real times but assert no speed of ours: a 0.5 ms sleep added to an op that takes
~0.35 ms is a 2.4x slowdown, far outside the machine's noise, and the same-vs-same check is what the tool promises
(its false-positive rate over many tries is measured in docs/ab.md, not here)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.ab.stats import Ratio, min_rounds, paired_ratio, verdict
from harness.ab.run import ABSettings, summarize
from harness.ab.trees import checkout_sides, suite_in
from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = "tests/ab/tiny.yaml"
SLOW_CELL = "op_speed/retnet[chunk]/forward/n=256/b=1/d=64/h=2/float32/seed=0"


# ---- the decision rule ---------------------------------------------------------------------------------------------

def test_paired_ratio_is_the_median_of_per_round_ratios_with_a_sign_test_interval():
    r = paired_ratio([1.0, 2.0, 4.0, 1.0, 1.0, 1.0], [1.1, 2.4, 4.4, 1.3, 1.2, 1.05])
    assert r.ratio == pytest.approx(1.15)  # ratios 1.1, 1.2, 1.1, 1.3, 1.2, 1.05
    # six rounds at 95%: [min, max], which holds the median with probability 1 - 2 / 2**6
    assert (r.low, r.high) == pytest.approx((1.05, 1.3)) and r.coverage == pytest.approx(1 - 2 / 64)
    # more rounds: the interval narrows to inner order statistics with coverage still >= 95%
    r = paired_ratio([1.0] * 20, [1 + i / 100 for i in range(20)])
    assert 0.95 <= r.coverage < 0.99 and 1.0 < r.low < r.ratio < r.high < 1.19


def test_min_rounds_and_pairing():
    assert min_rounds(0.95) == 6 and min_rounds(0.9) == 5 and min_rounds(0.99) == 8
    # a load change between rounds that both sides saw divides out: head = 1.1 x base in every round
    r = paired_ratio([1.0, 3.0, 1.0, 5.0, 2.0, 0.5], [1.1, 3.3, 1.1, 5.5, 2.2, 0.55])
    assert r.ratio == pytest.approx(1.1) and r.low == pytest.approx(1.1) and r.high == pytest.approx(1.1)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.parametrize("ratio,low,high,expected", [
    (1.30, 1.10, 1.50, "slower"),  # large and significant
    (1.30, 0.95, 1.60, "same"),  # large but the interval holds 1: noise
    (1.03, 1.01, 1.05, "same"),  # significant but under the threshold
    (0.70, 0.60, 0.90, "faster"),
    (0.70, 0.60, 1.02, "same"),
])
def test_verdict_needs_both_size_and_significance(ratio, low, high, expected):
    assert verdict(Ratio(ratio, low, high, 5), threshold=0.05) == expected


def _rows(cell: str, base: list, head: list) -> list[dict]:
    """Measurements as run.py records them: a float is an ok time, a string a failure status."""
    return [{"cell_id": cell, "round": r, "side": side, "status": "ok" if isinstance(v, float) else v,
             "value": v if isinstance(v, float) else None, "error": None if isinstance(v, float) else "boom"}
            for side, values in (("base", base), ("head", head)) for r, v in enumerate(values)]


def test_summarize_flags_a_slowdown_and_a_cell_that_fails_on_head_only():
    settings = ABSettings()
    slow = summarize("c", _rows("c", [1.0] * 6, [1.2, 1.3, 1.25, 1.2, 1.22, 1.4]), settings)
    assert slow["verdict"] == "slower" and slow["flagged"] and slow["ratio"] == pytest.approx(1.235)
    fast = summarize("c", _rows("c", [1.0] * 6, [0.7] * 6), settings)
    assert fast["verdict"] == "faster" and not fast["flagged"]
    head_fails = summarize("c", _rows("c", [1.0] * 6, [1.0] * 5 + ["error"]), settings)
    assert head_fails["verdict"] == "failed" and head_fails["flagged"] and "head: error (boom)" in head_fails["note"]
    both_fail = summarize("c", _rows("c", ["oom"] * 6, ["oom"] * 6), settings)
    assert both_fail["verdict"] == "failed" and not both_fail["flagged"]


# ---- bad input: exit 2 with a message naming what was wrong -------------------------------------------------------

def test_unknown_revision_is_bad_input(tmp_path, capsys):
    rc = main(["ab", "no-such-revision-xyz", str(ROOT), TINY, "--repo", str(ROOT), "--out", str(tmp_path)])
    assert rc == 2
    assert "'no-such-revision-xyz' is neither a directory nor a revision" in capsys.readouterr().err


def test_missing_suite_is_bad_input(tmp_path, capsys):
    rc = main(["ab", str(ROOT), str(ROOT), "suites/no_such_suite.yaml", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "suite 'suites/no_such_suite.yaml' not found in the HEAD side" in err


def test_suite_without_timed_cells_is_bad_input(tmp_path, capsys):
    suite = tmp_path / "untimed.yaml"
    suite.write_text("suite: untimed\nmixers: [standard]\nbenchmarks:\n  - kind: equivalence\n"
                     "    sweep: {seq_len: [16], batch: [1], d_model: [16], n_heads: [2], dtype: [float32]}\n")
    rc = main(["ab", str(ROOT), str(ROOT), str(suite), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "no timed cells to compare" in capsys.readouterr().err


def test_too_few_rounds_for_the_confidence_is_bad_input(tmp_path, capsys):
    assert main(["ab", str(ROOT), str(ROOT), TINY, "--rounds", "5", "--out", str(tmp_path)]) == 2
    assert "--rounds 5 is too few for a 95% interval" in capsys.readouterr().err


def test_a_side_that_cannot_start_is_bad_input_with_its_reason(tmp_path, capsys):
    old = tmp_path / "old"
    (old / "harness").mkdir(parents=True)
    (old / "harness" / "__init__.py").write_text("")  # a tree without the engine's executors
    rc = main(["ab", str(old), str(ROOT), TINY, "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    # it cannot plan the suite with its own code: the process dies, or imports the missing modules from an
    # installed copy (an editable install's finder), which the side's check of where its packages came from stops
    assert "error: the base side" in err and ("failed to start" in err or "not from its tree" in err)


# ---- end to end on a temporary git repository ----------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Two commits of the harness: the second adds a 0.5 ms sleep to the retnet operator's fast form only."""
    repo = tmp_path_factory.mktemp("ab-repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("harness", "architectures"):
        shutil.copytree(ROOT / package, repo / package, ignore=ignore)
    (repo / "tests" / "ab").mkdir(parents=True)
    shutil.copy(ROOT / TINY, repo / TINY)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    op = repo / "architectures" / "ops" / "retention.py"
    signature = "def _retention_chunk(inputs: dict) -> torch.Tensor:\n"
    assert signature in op.read_text(), "the retnet catalogue entry moved: update this test's edit"
    op.write_text(op.read_text().replace(signature, signature + "    __import__('time').sleep(5e-4)  # slower\n"))
    _git(repo, "commit", "-qam", "a slower retnet operator")
    return repo


def _ab(repo: Path, out: Path, base: str, head: str) -> tuple[int, dict]:
    rc = main(["ab", base, head, TINY, "--repo", str(repo), "--out", str(out), "--rounds", "6", "--no-progress"])
    return rc, json.loads((out / "ab.json").read_text())


def test_worktrees_are_removed_even_on_ctrl_c(repo):
    with pytest.raises(KeyboardInterrupt):
        with checkout_sides("HEAD~1", "HEAD", repo) as (base, head):
            assert base.commit == _git(repo, "rev-parse", "HEAD~1") and head.commit == _git(repo, "rev-parse", "HEAD")
            assert (base.root / "harness" / "__init__.py").exists() and base.worktree
            assert suite_in(head, TINY) == head.root / TINY
            raise KeyboardInterrupt
    assert not base.root.exists() and not head.root.exists()
    assert _git(repo, "worktree", "list").count("\n") == 0


@pytest.mark.slow
def test_a_slower_revision_is_flagged_in_exactly_that_cell(repo, tmp_path):
    rc, result = _ab(repo, tmp_path, "HEAD~1", "HEAD")
    assert rc == 1
    assert result["flagged"] == [SLOW_CELL]
    verdicts = {c["cell_id"]: c["verdict"] for c in result["cells"]}
    assert len(verdicts) == 3 and verdicts[SLOW_CELL] == "slower"
    # each side ran its own revision, from its own checkout
    commits = {"base": _git(repo, "rev-parse", "HEAD~1"), "head": _git(repo, "rev-parse", "HEAD")}
    rows = [json.loads(line) for line in (tmp_path / "measurements.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 6 * 2
    for side in ("base", "head"):
        mine = [r for r in rows if r["side"] == side]
        assert {r["commit"] for r in mine} == {commits[side]}
        assert all(r["harness"].startswith(r["tree"]) and r["tree"] != str(repo) for r in mine)
        assert len({r["pid"] for r in mine}) == 6  # a fresh process per side and round
    assert [r["side"] for r in rows[:2]] == ["base", "head"] and [r["side"] for r in rows[6:8]] == ["head", "base"]
    assert _git(repo, "worktree", "list").count("\n") == 0  # the temporary worktrees were removed
    pytest_benchmark = pytest.importorskip("pytest_benchmark")
    head_json = json.loads((tmp_path / "head.json").read_text())
    assert {b["name"] for b in head_json["benchmarks"]} == set(verdicts) and pytest_benchmark


@pytest.mark.slow
def test_the_same_revision_against_itself_flags_nothing(repo, tmp_path):
    rc, result = _ab(repo, tmp_path, "HEAD", "HEAD")
    assert rc == 0 and result["flagged"] == []
    assert len(result["cells"]) == 3 and all(c["verdict"] != "failed" for c in result["cells"])
