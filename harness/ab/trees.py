"""The two sides of ``harness ab`` as directory trees: an existing directory as it is, a git revision checked out
with ``git worktree add --detach`` into a temporary directory that is removed afterwards (on success, error or
Ctrl-C alike: ``checkout_sides`` is a context manager). The suite file is resolved in the HEAD side's tree."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class ABInputError(ValueError):
    """Bad input to ``harness ab`` (unknown revision, no such suite, nothing timed): exit status 2."""


@dataclass(frozen=True)
class Tree:
    label: str  # "base" or "head"
    spec: str  # what the user passed: a revision or a directory
    root: Path  # the tree whose harness/ and architectures/ the side imports
    commit: str | None  # the revision's full commit id (None for a directory that is not a git checkout)
    worktree: bool = False  # checked out by us (removed afterwards)


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        raise ABInputError(proc.stderr.strip() or f"git {' '.join(args)} failed")
    return proc.stdout.strip()


def repo_root(repo: str | Path | None) -> Path:
    """The git repository revisions are looked up in: ``repo`` or the one around the current directory."""
    start = Path(repo or ".").resolve()
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel"))
    except (ABInputError, FileNotFoundError) as err:
        raise ABInputError(f"{start} is not inside a git repository ({err}); pass --repo, or give BASE and HEAD "
                           "as directories") from None


def _commit_of(root: Path) -> str | None:
    try:
        return _git(root, "rev-parse", "HEAD")
    except (ABInputError, FileNotFoundError):
        return None


def _check_tree(label: str, spec: str, root: Path) -> None:
    if not (root / "harness" / "__init__.py").exists():
        raise ABInputError(f"{label} {spec!r}: {root} has no harness/ package (a transformer-bench tree expected)")


def resolve(label: str, spec: str, repo: str | Path | None, workdir: Path, stack: contextlib.ExitStack) -> Tree:
    """A directory as it is; otherwise a revision of ``repo``, checked out into ``workdir`` for the duration."""
    path = Path(spec)
    if path.is_dir():
        _check_tree(label, spec, path.resolve())
        return Tree(label, spec, path.resolve(), _commit_of(path.resolve()))
    root = repo_root(repo)
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except ABInputError:
        raise ABInputError(f"{label} {spec!r} is neither a directory nor a revision of the git repository "
                           f"{root}") from None
    dest = workdir / f"{label}-{commit[:10]}"
    _git(root, "worktree", "add", "--detach", "--quiet", str(dest), commit)
    stack.callback(_remove_worktree, root, dest)
    _check_tree(label, spec, dest)
    return Tree(label, spec, dest, commit, worktree=True)


def _remove_worktree(repo: Path, dest: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)], capture_output=True)
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


@contextlib.contextmanager
def checkout_sides(base: str, head: str, repo: str | Path | None = None) -> Iterator[tuple[Tree, Tree]]:
    """(base, head) trees; worktrees created here are removed when the block ends, however it ends."""
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="harness-ab-"))
        stack.callback(shutil.rmtree, workdir, True)
        yield resolve("base", base, repo, workdir, stack), resolve("head", head, repo, workdir, stack)


def suite_in(head: Tree, suite: str) -> Path:
    """SUITE resolved from the HEAD side: an absolute path as it is; a relative path in HEAD's tree; a bare name as
    HEAD's ``suites/<name>.yaml``."""
    path = Path(suite)
    candidates = [path] if path.is_absolute() else [head.root / path]
    if not path.is_absolute() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        candidates.append(head.root / "suites" / f"{suite}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ABInputError(f"suite {suite!r} not found in the HEAD side ({head.spec} at {head.root}): looked for "
                       f"{', '.join(str(c) for c in candidates)}; give an absolute path for a file outside HEAD")
