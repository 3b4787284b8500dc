"""Cells in a worker subprocess, reused from cell to cell; the parent enforces the budget and survives crashes.

A cell that does not answer within its budget plus a grace (``max(2 s, 10%)``: the worker's own SIGALRM turns a
budget overrun in Python code into a clean `timeout` row first) is killed and recorded as `timeout`; a worker that
dies (segfault, abort, os._exit, the kernel's OOM killer) is recorded as `crashed` with its signal or exit code and
the last lines of its stderr. Either way the next cell gets a fresh worker (importing torch again: ~1-2 s).
"""
from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import sys
import threading
import time

from . import ExecutorError
from .cell import failure
from .worker import HEADER, send

STDERR_TAIL = 60  # lines of a worker's stderr kept to explain its death


class WorkerDied(Exception):
    pass


class Worker:
    """A worker subprocess speaking the pipe protocol of ``worker.py``. ``command``, ``cwd`` and ``env`` (added to
    the parent's environment) default to this tree's ``harness.executors.worker``; ``harness ab`` starts its driver
    in another revision's tree with them."""

    def __init__(self, setup, echo_stderr: bool = True, *, command: list[str] | None = None, cwd=None,
                 env: dict[str, str] | None = None):
        env = {**os.environ, **(env or {}), "HARNESS_PARENT_PID": str(os.getpid())}
        self.proc = subprocess.Popen(command or [sys.executable, "-m", "harness.executors.worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     cwd=cwd, start_new_session=True)  # Ctrl-C reaches the parent only
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.echo = echo_stderr
        self.drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self.drain.start()
        self.buffer = b""
        send(self.proc.stdin, ("setup", setup))

    def _drain_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace")
            self.tail.append(line.rstrip("\n"))
            if self.echo:
                sys.stderr.write(line)

    def receive(self, deadline: float):
        """The next message, or TimeoutError at ``deadline``, or WorkerDied if the pipe closes."""
        fd = self.proc.stdout.fileno()
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack(self.buffer[:HEADER.size])
                if len(self.buffer) >= HEADER.size + size:
                    import pickle

                    data = self.buffer[HEADER.size:HEADER.size + size]
                    self.buffer = self.buffer[HEADER.size + size:]
                    return pickle.loads(data)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerDied
                self.buffer += chunk

    def death(self) -> str:
        """How the worker ended, and the last lines of its stderr."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        self.drain.join(timeout=2)
        if code is not None and code < 0:
            how = f"killed by signal {-code} ({signal.Signals(-code).name})"
        else:
            how = f"exited with code {code}"
        lines = [line.strip() for line in self.tail if line.strip()]
        fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
        # faulthandler's dump lists the innermost frame first: keep the error and the frames nearest to it
        lines = lines[fatal[-1]:fatal[-1] + 6] if fatal else lines[-8:]
        tail = " | ".join(lines)[-1500:]
        return f"worker process {self.proc.pid} {how}" + (f"; last stderr: {tail}" if tail else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and anything it started
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class IsolatedExecutor:
    slots = 1

    def __init__(self, echo_stderr: bool = True):
        self.setup = None
        self.worker: Worker | None = None
        self.job = None
        self.echo = echo_stderr
        self.started = 0  # workers started (1 + restarts after crashes and kills)

    def start(self, setup) -> None:
        self.setup = setup

    def submit(self, job) -> None:
        self.job = job

    def wait(self):
        job, self.job = self.job, None
        return job, self._run(job)

    def _run(self, job) -> list[dict]:
        grace = max(2.0, 0.1 * job.budget_s)
        try:
            if self.worker is None:
                self._start_worker()
            send(self.worker.proc.stdin, ("cell", job))
            kind, rows = self.worker.receive(time.monotonic() + job.budget_s + grace)
            return rows
        except TimeoutError:
            self._discard()
            return failure("timeout", f"cell exceeded its time budget of {job.budget_s:g} s and did not stop "
                                      f"(killed by the runner after {job.budget_s + grace:g} s; stuck in C code?)")
        except (WorkerDied, BrokenPipeError, EOFError):
            message = self.worker.death()
            self._discard()
            return failure("crashed", message)

    def _start_worker(self) -> None:
        """A fresh worker, ready for cells (torch imported, benchmarks built). One that cannot get there is a
        broken environment, not a failed cell: ExecutorError."""
        self.worker = Worker(self.setup, self.echo)
        self.started += 1
        try:
            self.worker.receive(time.monotonic() + 600)  # ("ready", pid)
        except (WorkerDied, TimeoutError, EOFError) as err:
            message = self.worker.death() if isinstance(err, WorkerDied) else "no answer within 600 s"
            self._discard()
            raise ExecutorError(f"the isolated executor's worker failed to start: {message}") from None

    def _discard(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def close(self) -> None:
        self._discard()
