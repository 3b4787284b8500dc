"""A lock on a run directory: ``OUT/.lock`` holds the pid, host and command of the run writing there.

The file is locked with ``flock`` while the run lives; the kernel releases it when the process ends, however it
ends, so a lock file left by a dead run (SIGKILL, power loss) is stale and taken over with a note. A second run,
or a ``--resume`` beside a live run, is refused with a message that names the holder.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class LockHeld(Exception):
    pass


class RunLock:
    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None
        self.stale: dict | None = None  # the holder recorded by a dead run whose lock this one took over

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self._holder()
            raise LockHeld(f"{self.path.parent} is in use by another run (pid {h.get('pid', '?')} on host "
                           f"{h.get('host', '?')}, started {h.get('started', '?')}: {h.get('command', '?')}); wait "
                           f"for it to finish or stop it, or choose another --out") from None
        old = self._holder()
        if old.get("pid"):
            self.stale = old
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "command": " ".join(sys.argv)}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty lock file: no holder
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
