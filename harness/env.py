"""The environment a run happened in, written to ``OUT/env.json`` and shown at the top of the report."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from .device import device_info

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The repository's ``suites/`` or ``claims/``: in a source checkout the directory itself (edit it there); in an
    installed package its copy shipped as package data (``harness/_suites``, ``harness/_claims``: pyproject.toml
    maps the top-level directories to these packages)."""
    tree = REPO_ROOT / name
    return tree if tree.is_dir() else Path(__file__).resolve().parent / f"_{name}"


def package_version() -> str:
    try:
        return metadata.version("transformer-bench")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def git_commit(repo: Path = REPO_ROOT, ignore: Path | None = None) -> str:
    """HEAD of ``repo``, with "+dirty" when a tracked file differs from it. ``ignore``: a directory whose changes do
    not count (a run directory inside the checkout, such as ``reports/<suite>-cpu``, which the run itself rewrites:
    without it every committed report's commit read "+dirty" whatever the code)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        status = ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"]
        inside = _relative_to(ignore, repo) if ignore is not None else None
        if inside is not None:
            status += ["--", ".", f":(exclude){inside.as_posix()}"]
        dirty = subprocess.run(status, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _relative_to(path: Path, repo: Path) -> Path | None:
    """``path`` relative to the checkout ``repo`` (symlinks resolved), or None when it lies outside it."""
    try:
        rel = Path(path).resolve().relative_to(Path(repo).resolve())
    except ValueError:
        return None
    return rel if rel.parts else None  # the checkout itself is not a run directory to ignore


# what env.json's "invocations" keeps of each run or resume of a run directory: when, which code, on what (the
# runner adds the --benchmarks and --cells filters and, on a resume, the suite changes)
INVOCATION_KEYS = ("time_utc", "git_commit", "torch", "device_name", "torch_threads")


def invocation_history(old_env: dict) -> list[dict]:
    """The invocations an env.json records (its run and each resume), oldest first. An env.json written before the
    history existed has only its latest invocation and the one it resumed from (``resumed_from``); older ones are
    not recorded anywhere."""
    if not old_env:
        return []
    if "invocations" in old_env:
        return list(old_env["invocations"])
    latest = {k: old_env.get(k) for k in INVOCATION_KEYS}
    earlier = old_env.get("resumed_from")
    return ([{**earlier, "note": "resumed from (invocations before it are not recorded)"}] if earlier else []) + [latest]


def collect_env(device: torch.device, run_dir: Path | None = None) -> dict:
    """The machine, the software and the commit; ``run_dir``: the run directory (its own files do not make the
    checkout dirty)."""
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "transformer_bench": package_version(),
        "git_commit": git_commit(ignore=run_dir),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],  # other work on a shared machine
        "cpu_model": device_info(torch.device("cpu"))["device_name"],
        **device_info(device),
    }
