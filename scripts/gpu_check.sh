#!/usr/bin/env bash
# The GPU check: everything that needs CUDA, in at most 8 minutes on one GPU, on a machine without network.
#
#   scripts/gpu_check.sh [--wheels DIR] [--out PATH] [--python PY] [--no-install]
#
# 1. install: `pip install --no-deps -e .` (no build isolation: nothing is downloaded), and every missing pure-Python
#    dependency (runtime and the `dev` extra) from the wheel folder DIR (`--wheels DIR` or WHEELS=DIR); skipped when
#    this checkout is already what `import harness` finds. PyTorch with CUDA must already be installed.
# 2. `pytest -m cuda`: the tests that need a GPU (each skipped with its reason without one);
# 3. the smoke suite with --device cuda (its CUDA profile: bf16, forward, train and decode of every mixer);
# 4. suites/gpu_check.yaml with --device cuda: every GPU impl (sdpa_flash, sdpa_efficient, sdpa_cudnn, fla, mamba_ssm);
# 5. the report (python -m harness.gpu_check): torch / CUDA / GPU, each step, each test and each cell (ok, or skipped
#    with its reason). PATH: a .md file, or a directory for gpu-check-<gpu>.md (default: a temporary directory).
# Without a usable GPU, steps 3-4 are not run and every CUDA cell is recorded as skipped with the reason; the check
# then exits 0 (CI runs it that way). Exit 1 when a test fails, a step fails or times out, or a cell is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python}"
WHEELS="${WHEELS:-}"
OUT=""
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --wheels DIR, --out PATH, --python PY, --no-install)" >&2
       exit 2 ;;
  esac
done

# This checkout's code is what runs, whether or not the install step below succeeds (its failure is reported).
export PYTHONPATH="$(pwd -P)${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
OUT="${OUT:-$WORK}"
STEPS="$WORK/steps.tsv"
: > "$STEPS"
# Time limits per step (seconds), sized so that the whole check stays under 8 minutes on one GPU.
T_TESTS="${GPU_CHECK_T_TESTS:-180}"
T_SMOKE="${GPU_CHECK_T_SMOKE:-150}"
T_IMPLS="${GPU_CHECK_T_IMPLS:-120}"

# step NAME LIMIT_S CMD...: runs CMD under `timeout`, records name, exit code, seconds and a note in steps.tsv.
step() {
  local name="$1" limit="$2"; shift 2
  local start rc note
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  set +e
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  note="$(tail -n 1 "$WORK/$name.log" | tr '\t' ' ' | cut -c1-200)"
  [ "$rc" = 124 ] && note="timed out after ${limit}s; last output: $note"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$note" >> "$STEPS"
  return 0
}

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check.sh: $PY cannot import torch; install a CUDA build of PyTorch first" >&2
  exit 2
fi

if [ "$INSTALL" = 1 ]; then
  here="$(pwd -P)"
  # what `import harness` finds without our PYTHONPATH, i.e. what is installed
  found="$(cd / && env -u PYTHONPATH "$PY" -c 'import harness, pathlib; print(pathlib.Path(harness.__file__).resolve().parent.parent)' 2>/dev/null || true)"
  if [ "$found" = "$here" ]; then
    echo "== install: this checkout is already installed ($found)"
  else
    # with the environment's setuptools; if that one cannot build an editable install (setuptools < 64, no wheel),
    # in an isolated build whose build requirements come from the wheel folder
    step install 120 bash -c '"$0" -m pip install --no-deps --no-build-isolation --no-index -e . \
      || { [ -n "$1" ] && echo "retrying with build requirements from $1" \
           && "$0" -m pip install --no-deps --no-index --find-links "$1" -e .; }' "$PY" "$WHEELS"
  fi
  missing="$("$PY" scripts/missing_requirements.py dev)"
  if [ -n "$missing" ]; then
    if [ -z "$WHEELS" ]; then
      echo "gpu_check.sh: missing Python packages ($missing) and no wheel folder (--wheels DIR or WHEELS=DIR)" >&2
      exit 2
    fi
    # shellcheck disable=SC2086
    step wheels 120 "$PY" -m pip install --no-index --find-links "$WHEELS" $missing
  fi
  # The fla impls and the oracle tests need the `oracles` extra: installed from the wheel folder when it has them,
  # else those cells and tests are skipped with the reason (a missing optional backend is not a failure).
  optional="$("$PY" scripts/missing_requirements.py --extras-only oracles)"
  if [ -n "$optional" ] && [ -n "$WHEELS" ]; then
    for pkg in $optional; do
      "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$pkg" \
        || echo "gpu_check.sh: optional $pkg is not in $WHEELS: what needs it is skipped"
    done
  fi
fi

CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
step tests "$T_TESTS" "$PY" -m pytest -q -m cuda tests -p no:cacheprovider --junitxml="$WORK/cuda-tests.xml"
# pytest exits 5 when no test is selected: that is a failure here too (the cuda tests vanished).
if [ "$CUDA" = 1 ]; then
  step smoke "$T_SMOKE" "$PY" -m harness run suites/smoke.yaml --device cuda --out "$WORK/smoke" --no-progress
  step gpu_check "$T_IMPLS" "$PY" -m harness run suites/gpu_check.yaml --device cuda --out "$WORK/gpu_check" \
    --no-progress
else
  echo "== no usable CUDA device: the suites' CUDA cells are recorded as skipped"
fi

"$PY" -m harness.gpu_check "$WORK" "$OUT" --suite "suites/smoke.yaml=$WORK/smoke" \
  --suite "suites/gpu_check.yaml=$WORK/gpu_check"
