"""Malformed suites are rejected with file, line and field, and no traceback."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import SuiteError
from harness.suites import load_suite

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
suite: t
mixers: [standard, flash]
benchmarks:
  - kind: scaling
    modes: [forward]
    sweep:
      seq_len: [64, 128]
"""


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return info.value.problems, path


def test_good_suite_loads(tmp_path):
    suite, _ = load_suite(write(tmp_path, GOOD))
    assert suite.benchmarks[0].sweep.seq_len == [64, 128]


def test_shipped_suites_are_valid():
    for path in sorted((REPO / "suites").glob("*.yaml")):
        load_suite(path)


def test_unknown_key(tmp_path):
    probs, path = problems(tmp_path, GOOD.replace("    modes: [forward]\n", "    modes: [forward]\n    sweeep: {}\n"))
    assert probs == [f"{path}:6: benchmarks[0].sweeep: unknown key (not part of the schema; check the spelling)"]


def test_unknown_mixer_with_suggestion(tmp_path):
    probs, path = problems(tmp_path, GOOD.replace("[standard, flash]", "[standard, flsh]"))
    assert len(probs) == 1
    assert probs[0].startswith(f"{path}:2: mixers[1]: unknown mixer 'flsh'; did you mean 'flash'?")


def test_unknown_mixer_on_its_own_line(tmp_path):
    text = GOOD.replace("mixers: [standard, flash]", "mixers:\n  - standard\n  - name: linearr\n    hparams: {}")
    probs, path = problems(tmp_path, text)
    # the closest match first; others may follow ("linformer")
    assert probs[0].startswith(f"{path}:4: mixers[1]: unknown mixer 'linearr'; did you mean 'linear'")


def test_wrong_type(tmp_path):
    probs, path = problems(tmp_path, GOOD.replace("[64, 128]", "[64, big]"))
    assert len(probs) == 1
    assert probs[0].startswith(f"{path}:7: benchmarks[0].sweep.seq_len[1]: Input should be a valid integer")
    assert "'big'" in probs[0]


def test_negative_length(tmp_path):
    probs, path = problems(tmp_path, GOOD.replace("[64, 128]", "[64, -128]"))
    assert probs == [f"{path}:7: benchmarks[0].sweep.seq_len[1]: Input should be greater than 0 (got -128)"]


def test_bad_hyperparameter_and_impl(tmp_path):
    text = GOOD.replace("mixers: [standard, flash]", "mixers:\n  - {name: sliding_window, hparams: {windw: 4}}")
    probs, path = problems(tmp_path, text)
    assert "has no hyperparameter(s) ['windw']" in probs[0] and probs[0].startswith(f"{path}:3: mixers[0]")
    text = GOOD.replace("mixers: [standard, flash]", "mixers:\n  - {name: flash, impl: cuda_magic}")
    probs, _ = problems(tmp_path, text)
    assert "has no impl 'cuda_magic'" in probs[0]


def test_bad_benchmark_kind_mode_and_params(tmp_path):
    probs, path = problems(tmp_path, GOOD.replace("kind: scaling", "kind: scalng"))
    assert probs[0].startswith(f"{path}:4: benchmarks[0].kind: unknown benchmark 'scalng'; did you mean 'scaling'?")
    probs, path = problems(tmp_path, GOOD.replace("[forward]", "[forwards]"))
    assert probs[0].startswith(f"{path}:5: benchmarks[0].modes: unknown mode(s) ['forwards']")
    probs, path = problems(tmp_path, GOOD + "    params:\n      fit: {tolerance: -1}\n")
    assert probs == [f"{path}:9: benchmarks[0].params.fit.tolerance: Input should be greater than 0 (got -1)"]


def test_invalid_yaml_and_missing_file(tmp_path):
    probs, path = problems(tmp_path, "suite: t\nmixers: [standard\n")
    assert probs[0].startswith(f"{path}:") and "invalid YAML" in probs[0]
    with pytest.raises(SuiteError, match="cannot read suite"):
        load_suite(tmp_path / "nope.yaml")


def test_missing_required_field(tmp_path):
    probs, path = problems(tmp_path, "suite: t\nmixers: [standard]\n")
    assert probs == [f"{path}:1: benchmarks: required field is missing"]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_reports_without_traceback(tmp_path, command):
    path = write(tmp_path, GOOD.replace("[64, 128]", "[64, -128]").replace("[standard, flash]", "[standard, flsh]"))
    proc = subprocess.run([sys.executable, "-m", "harness", command, str(path), "--out", str(tmp_path / "o")]
                          if command == "run" else [sys.executable, "-m", "harness", command, str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:7: benchmarks[0].sweep.seq_len[1]" in proc.stderr


def test_benchmark_mixer_filter(tmp_path):
    from harness.runner import plan
    import torch

    text = GOOD + "  - kind: scaling\n    name: only_flash\n    mixers: [fla*]\n    sweep: {seq_len: [32]}\n"
    suite, _ = load_suite(write(tmp_path, text))
    cells = [c for c in plan(suite, torch.device("cpu")) if c.benchmark == "only_flash"]
    assert [c.mixer for c in cells] == ["flash"]
    probs, path = problems(tmp_path, text.replace("[fla*]", "[mamba]"))
    assert probs == [f"{path}:10: benchmarks[1].mixers[0]: 'mamba' matches none of the suite's mixers "
                     "(standard, flash)"]
