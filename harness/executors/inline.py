"""Cells in the runner's own process: for debugging, and for the tests of measurement."""
from __future__ import annotations

from .cell import CellRunner


class InlineExecutor:
    slots = 1

    def __init__(self):
        self.runner = None
        self.pending = None

    def start(self, setup) -> None:
        self.runner = CellRunner(setup)

    def submit(self, job) -> None:
        self.pending = job

    def wait(self):
        job, self.pending = self.pending, None
        return job, self.runner.run(job)

    def close(self) -> None:
        self.pending = None
