"""Print the requirements of the installed transformer-bench that are not installed, space-separated.

    python scripts/missing_requirements.py [--extras-only] [EXTRA ...]

Reads the requirements from the installed project's metadata (so it works offline, on any Python >= 3.10); the base
requirements and those of the named extras, or the extras' alone with --extras-only. torch and triton are never
listed: the GPU machine's CUDA build of PyTorch (and the Triton it ships with) is used as it is. Versions are not
compared, only presence.
"""
import importlib.metadata as metadata
import re
import sys

NEVER = {"torch", "triton"}


def requirements() -> list[str]:
    """The installed project's requirements; from pyproject.toml (Python >= 3.11) if it is not installed."""
    try:
        return metadata.requires("transformer-bench") or []
    except metadata.PackageNotFoundError:
        import tomllib  # Python >= 3.11
        from pathlib import Path

        project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
        reqs = list(project.get("dependencies", []))
        for extra, items in project.get("optional-dependencies", {}).items():
            reqs += [f'{r}; extra == "{extra}"' for r in items]
        return reqs


def missing(extras: set[str], extras_only: bool) -> list[str]:
    names = []
    for req in requirements():
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        wanted = (extra.group(1) in extras) if extra else not extras_only
        if not wanted or name.lower() in NEVER:
            continue
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            names.append(name)
    return names


if __name__ == "__main__":
    args = sys.argv[1:]
    only = "--extras-only" in args
    print(" ".join(missing({a for a in args if not a.startswith("--")}, only)))
