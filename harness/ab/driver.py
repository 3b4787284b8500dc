"""The process that measures one side of ``harness ab``: ``python -c "runpy.run_path(<this file>)"`` with its cwd
and PYTHONPATH set to that side's tree, so every ``harness`` / ``architectures`` import below is the revision's own.

It must therefore run against any revision's ``harness``: it uses only the engine's long-standing API (the suite
loader, ``runner.plan``, ``executors.Setup`` / ``Job``, ``executors.cell.CellRunner``, the pipe framing of
``executors.worker``) and nothing of ``harness.ab`` itself. Protocol (the worker's length-prefixed pickles, plain
data only, so that two revisions' classes never meet in one pickle):

    parent -> ("setup", {"suite_path", "device", "only", "threads", "cpu_allocator", "plugins", "out"})
    driver -> ("ready", {"pid", "harness", "architectures", "cells": [{"cell_id", "kind", ...}]}) or ("error", text)
    parent -> ("cell", SimpleNamespace(cell_id, budget_s))    driver -> ("rows", [row dicts])  (measured once)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _jobs(setup: dict):
    """The side's own plan of the suite and a Job per cell, with the settings its runner would give each."""
    import torch

    from harness.device import resolve_device
    from harness.executors import Job
    from harness.runner import plan
    from harness.suites import load_suite

    suite, _ = load_suite(Path(setup["suite_path"]))
    device = resolve_device(setup["device"])
    default_threads = torch.get_num_threads()
    entries = {e.label: e for e in suite.benchmarks}
    jobs = {}
    for cell in plan(suite, device, setup.get("only")):
        entry = entries[cell.benchmark]
        # as harness.runner: --threads, else the entry's cpu_threads, else the suite's, else torch's default
        chosen = setup.get("threads") or entry.cpu_threads or suite.timing.cpu_threads or "all"
        threads = default_threads if chosen == "all" or device.type != "cpu" else chosen
        jobs[cell.cell_id] = Job(cell=cell, timing=entry.timing_for(suite.timing), threads=threads,
                                 budget_s=suite.time_budget_s)
    return suite, device, jobs


def _runner(setup: dict, suite, device):
    from harness.executors import Setup, load_plugins
    from harness.executors.cell import CellRunner

    load_plugins(tuple(setup.get("plugins") or ()))
    Path(setup["out"]).mkdir(parents=True, exist_ok=True)
    return CellRunner.in_new_process(Setup(
        suite=suite, device=device, matmul_peak={}, out=Path(setup["out"]),
        suite_dir=Path(setup["suite_path"]).resolve().parent, cpu_allocator=setup.get("cpu_allocator", "caching"),
        plugins=tuple(setup.get("plugins") or ())))


def _ready(jobs: dict) -> dict:
    import architectures
    import harness

    cells = [{"cell_id": cid, "kind": job.cell.kind, **{k: v for k, v in job.cell.fields().items() if k != "hparams"}}
             for cid, job in jobs.items()]
    return {"pid": os.getpid(), "harness": harness.__file__, "architectures": architectures.__file__,
            "cells": cells}


def serve(inbox, outbox) -> int:
    from harness.executors.worker import receive, send

    runner = jobs = None
    while True:
        message = receive(inbox)
        if message is None:
            return 0  # the parent is gone
        kind, payload = message
        if kind == "setup":
            try:
                suite, device, jobs = _jobs(payload)
                runner = _runner(payload, suite, device)
            except Exception as err:  # noqa: BLE001 - reported to the parent, which names the side
                send(outbox, ("error", f"{type(err).__name__}: {err}"))
                return 1
            send(outbox, ("ready", _ready(jobs)))
        elif kind == "cell":
            send(outbox, ("rows", runner.run(jobs[payload.cell_id])))


def main() -> int:
    import faulthandler
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops this process
    faulthandler.enable()
    inbox = os.fdopen(os.dup(0), "rb")
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a cell's print() must not corrupt the protocol
    sys.stdout = sys.stderr
    try:
        from harness.executors.worker import _die_with_parent

        _die_with_parent()
    except ImportError:
        pass
    return serve(inbox, outbox)


if __name__ == "__main__":
    sys.exit(main())
