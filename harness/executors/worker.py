"""The isolated executor's worker: ``python -m harness.executors.worker``, driven by its parent over a pipe.

Protocol (length-prefixed pickles): the parent sends ``("setup", Setup)`` once, then ``("cell", Job)`` per cell;
the worker answers ``("ready", pid)`` after setup and ``("rows", rows)`` per cell. The protocol uses the worker's
original stdout; anything a cell prints goes to stderr, whose tail the parent keeps for a crash row.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import signal
import struct
import sys

HEADER = struct.Struct("!Q")


def send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream):
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None  # the parent is gone
    (size,) = HEADER.unpack(head)
    return pickle.loads(stream.read(size))


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies (a SIGKILLed run leaves no orphan measuring)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(os.environ.get("HARNESS_PARENT_PID", os.getppid())):
        os._exit(1)  # the parent died before prctl took effect


def main() -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops this worker
    faulthandler.enable()  # a segfault prints the Python stack to stderr, which ends up in the crash row
    inbox = os.fdopen(os.dup(0), "rb")
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a cell's print() must not corrupt the protocol
    sys.stdout = sys.stderr
    from .cell import CellRunner

    runner = None
    while True:
        message = receive(inbox)
        if message is None:
            return 0
        kind, payload = message
        if kind == "setup":
            runner = CellRunner.in_new_process(payload)
            send(outbox, ("ready", os.getpid()))
        elif kind == "cell":
            send(outbox, ("rows", runner.run(payload)))


if __name__ == "__main__":
    sys.exit(main())
