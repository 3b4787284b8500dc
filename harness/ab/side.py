"""One side of ``harness ab`` from the parent: a long-lived driver process (``driver.py``) in the side's tree that
plans the suite with the side's own code and measures the cells it is sent, one at a time, for every round.

The process is the isolated executor's ``Worker`` (pipe protocol, stderr tail, kill, death report) started with
another command, cwd and PYTHONPATH: the side's tree comes first on ``sys.path`` (``python -c`` puts the cwd
there; ``driver.py`` is run from this tree by path), so the code under test is the revision's; ``ready`` reports which ``harness`` and ``architectures`` it
imported and the parent checks both lie in the side's tree. A cell that kills or hangs the process is a failure
row (``crashed`` / ``timeout``) and the side restarts for the next cell, exactly as in ``harness run``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from ..executors import ExecutorError
from ..executors.isolated import IsolatedExecutor, Worker, WorkerDied
from .trees import ABInputError, Tree

DRIVER = Path(__file__).with_name("driver.py")
# run driver.py by path without putting its directory (this tree's harness/ab) on sys.path: `python -c` puts the
# cwd (the side's tree) first, and runpy.run_path adds nothing for a file
BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
START_TIMEOUT_S = 600  # importing torch on a loaded machine takes 15-20 s; a stuck start is an error, not a wait


class Side(IsolatedExecutor):
    """The isolated executor with the driver as its worker: ``_run`` (budget, kill, crash rows) is reused as is;
    a job is ``SimpleNamespace(cell_id, budget_s)`` (a builtin type: the side's code unpickles it)."""

    def __init__(self, tree: Tree, setup: dict, echo_stderr: bool = True):
        super().__init__(echo_stderr)
        self.tree = tree
        self.setup = setup
        self.info: dict = {}

    def spawn(self) -> None:
        """Start the driver and return at once (``wait_ready`` collects its answer: both sides import in parallel)."""
        root = str(self.tree.root)
        others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                  if p and not (Path(p) / "harness" / "__init__.py").exists()]  # no other tree's harness
        self.worker = Worker(self.setup, self.echo, command=[sys.executable, "-c", BOOT, str(DRIVER)],
                             cwd=root, env={"PYTHONPATH": os.pathsep.join([root, *others])})
        self.started += 1

    def wait_ready(self) -> dict:
        what = f"the {self.tree.label} side ({self.tree.spec})"
        try:
            kind, info = self.worker.receive(time.monotonic() + START_TIMEOUT_S)
        except (WorkerDied, TimeoutError, EOFError) as err:
            why = self.worker.death() if isinstance(err, WorkerDied) else f"no answer in {START_TIMEOUT_S} s"
            self.close()
            raise ExecutorError(f"{what} failed to start: {why}") from None
        if kind == "error":
            self.close()
            raise ABInputError(f"{what} cannot run the suite: {info}")
        for package in ("harness", "architectures"):
            if not Path(info[package]).resolve().is_relative_to(self.tree.root.resolve()):
                self.close()
                raise ExecutorError(f"{what} imported {package} from {info[package]}, not from its tree "
                                    f"{self.tree.root}: the tree lacks it, or an installed copy shadows it")
        self.info = info
        return info

    def _start_worker(self) -> None:  # a restart after a crash or a kill
        self.spawn()
        self.wait_ready()

    def measure(self, cell_id: str, budget_s: float) -> list[dict]:
        """The cell's rows, measured once (a failure row if the process died or hung; it restarts next time)."""
        return self._run(SimpleNamespace(cell_id=cell_id, budget_s=budget_s))
