"""The strict validator: a corpus of malformed suites (tests/malformed_suites/*.yaml, each naming on its first line
the field its message must name), generated ones that cannot be text files (binary, non-UTF-8, too deep, too big,
alias bombs), and a hypothesis fuzz of the loader. Every one is rejected by `validate` with rc 2, a message naming
the file, the line and the field, and never a traceback."""
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config import MAX_SUITE_BYTES, SuiteError
from harness.suites import load_suite

CORPUS = sorted((Path(__file__).parent / "malformed_suites").glob("*.yaml"))
SUITES = sorted((Path(__file__).parents[1] / "suites").glob("*.yaml"))
VALID = "suite: ok\nmixers: [standard]\nbenchmarks:\n  - kind: scaling\n    sweep: {seq_len: [16], d_model: [16], n_heads: [2]}\n"


def _validate(capsys, path: Path) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["validate", str(path)])
    return rc, capsys.readouterr().err


def _assert_rejected(rc: int, err: str, path: Path, field: str, line: bool = True) -> None:
    assert rc == 2, f"{path.name} was accepted"
    assert "Traceback" not in err
    number = r":(\d+)" if line else ""  # a file too big as a whole has no line to name
    located = re.search(rf"{re.escape(str(path))}{number}: {re.escape(field)}(:|\.| |\[)", err)
    assert located, f"{path.name}: expected a message at {path}:LINE: {field}; got:\n{err}"


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed_suite_is_rejected_with_file_line_and_field(path, capsys):
    field = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
    rc, err = _validate(capsys, path)
    _assert_rejected(rc, err, path, field)


def test_messages_point_at_the_offending_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(VALID.replace("mixers: [standard]", "mixers:\n  - standard\n  - {name: linear, hparams: "
                                                        "{chunk_size: -5}}"))
    rc, err = _validate(capsys, path)
    assert rc == 2 and f"{path}:4: mixers[1].hparams.chunk_size: must be an integer >= 1, got -5" in err
    path.write_text(VALID + "suite: twice\n")
    rc, err = _validate(capsys, path)
    assert rc == 2 and f"{path}:6: suite: duplicate key (first at line 1)" in err


GENERATED = {
    "binary": ("(file)", b"suite: x\n\x00\x01\x02 binary junk\n"),
    "not_utf8": ("(file)", VALID.replace("ok", "caf\xe9").encode("latin-1")),
    "too_deep": ("(document)", b"suite: x\nmixers: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    "too_deep_mapping": ("(document)", b"suite: x\nmixers:\n" + b"".join(b" " * i + b"k:\n" for i in range(1, 1200))),
    "too_big": ("(file)", VALID.encode() + b"#" * MAX_SUITE_BYTES),
    "alias_bomb": ("mixers[0].hparams", ("suite: x\nmixers:\n  - name: linear\n    hparams:\n"
                                         "      a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                                         + "".join(f"      {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
                                                   for i in range(8))
                                         + "benchmarks: [{kind: scaling}]\n").encode()),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_unreadable_or_hostile_file_is_named(name, tmp_path, capsys):
    field, data = GENERATED[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(data)
    rc, err = _validate(capsys, path)
    _assert_rejected(rc, err, path, field, line=name != "too_big")


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_bytes(GENERATED["alias_bomb"][1])
    started = time.monotonic()
    with pytest.raises(SuiteError, match="expands to more than"):
        load_suite(path)
    assert time.monotonic() - started < 5


def test_a_missing_or_unreadable_file_is_a_message(tmp_path, capsys):
    rc, err = _validate(capsys, tmp_path / "nowhere.yaml")
    assert rc == 2 and "nowhere.yaml" in err and "Traceback" not in err
    rc, err = _validate(capsys, tmp_path)  # a directory
    assert rc == 2 and str(tmp_path) in err


def test_shipped_suites_are_valid():
    for path in SUITES:
        load_suite(path)


# ---- fuzz: the loader never raises anything but SuiteError ---------------------------------------------------------
KEYS = ["suite", "mixers", "benchmarks", "kind", "name", "label", "hparams", "sweep", "seq_len", "d_model",
        "n_heads", "dtype", "timing", "time_budget_s", "profiles", "cuda", "cpu", "params", "modes", "chunk_size",
        "window", "seed", "impl", "warmup", "max_time_s", "cpu_threads", "allow_missing_mixers", "description"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["standard", "linear", "scaling", "*", "float32", "../x",
                                                           "forward", "decode", "all"]))
TREES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children,
                                                    max_size=5)), max_leaves=25)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _load_or_reject(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        try:
            load_suite(path)
        except SuiteError as err:
            assert err.problems and all(p.startswith(str(path)) for p in err.problems)


@FUZZ
@given(TREES)
def test_fuzz_random_yaml_trees(tree):
    import yaml

    _load_or_reject(yaml.safe_dump(tree, allow_unicode=True).encode())


@FUZZ
@given(st.sampled_from(SUITES), st.lists(st.tuples(st.sampled_from(["delete", "insert", "duplicate", "swap"]),
                                                    st.integers(0, 10**6), st.integers(0, 10**6),
                                                    st.text(alphabet=":-[]{}&*!'\"#\n\t 0123456789abc.", max_size=6)),
                                          min_size=1, max_size=4))
def test_fuzz_mutations_of_the_shipped_suites(path, edits):
    lines = path.read_text().splitlines(keepends=True)
    for op, a, b, text in edits:
        if not lines:
            break
        i, j = a % len(lines), b % len(lines)
        if op == "delete":
            line = lines[i]
            lines[i] = line[:j % (len(line) + 1)] + line[j % (len(line) + 1) + len(text):]
        elif op == "insert":
            line = lines[i]
            k = j % (len(line) + 1)
            lines[i] = line[:k] + text + line[k:]
        elif op == "duplicate":
            lines.insert(j, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
    _load_or_reject("".join(lines).encode())


def test_depth_verdict_does_not_depend_on_the_recursion_limit(tmp_path, capsys):
    """CI once ran with a raised recursion limit (set by another library) and the 1200-level mapping composed
    without a RecursionError, so the suite got as far as the schema. Depth is checked explicitly now."""
    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        path = tmp_path / "deep.yaml"
        path.write_bytes(GENERATED["too_deep_mapping"][1][:4000])  # ~90 levels: composes at any limit
        rc, err = _validate(capsys, path)
    finally:
        sys.setrecursionlimit(old)
    _assert_rejected(rc, err, path, "(document)")
    assert "nesting deeper than" in err
