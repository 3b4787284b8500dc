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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect_env(device: torch.device) -> dict:
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "transformer_bench": package_version(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": device_info(torch.device("cpu"))["device_name"],
        **device_info(device),
    }
