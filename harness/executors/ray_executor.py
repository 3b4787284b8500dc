"""Cells as Ray tasks: ``run --executor ray [--ray-address HOST:PORT]`` (else $RAY_ADDRESS, else a local Ray
started for the run and stopped after it).

Each cell is one task with its resource request: one GPU on CUDA, ``cpus`` CPUs on CPU (torch in the task uses as
many threads; rows record it). The driver (the ``run`` process) keeps the plan, the skip-after-OOM rule (the
lengths of a series are submitted one after the other) and the journal: rows stream back as tasks finish and are
committed one cell at a time, as with the other executors. A task whose worker dies (segfault, os._exit, Ray's
memory monitor) becomes a ``crashed`` (or ``oom``) row; one past its budget plus a grace is cancelled (its worker
killed) and recorded as ``timeout``. Every node needs this repository at the same commit importable (installed, or
on a shared filesystem: the driver passes its PYTHONPATH to the tasks) and, for benchmarks that write files
(perplexity checkpoints), the run directory on a shared filesystem.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

from . import ExecutorError
from .cell import failure

_RUNNERS: dict[str, object] = {}  # inside a Ray worker process: setup key -> CellRunner (built once, reused)


def _run_cell(setup, key: str, job):
    from .cell import CellRunner

    if key not in _RUNNERS:
        _RUNNERS.clear()
        _RUNNERS[key] = CellRunner.in_new_process(setup)
    return _RUNNERS[key].run(job)


def _auth_hint(address: str | None) -> str:
    """Ray turns token authentication on for `ray start --head` when ~/.ray/auth_token exists, but never for a
    client given an explicit address: the usual cause of "Authentication token is missing or incorrect"."""
    if address is None or os.environ.get("RAY_AUTH_MODE"):
        return ""
    return ("\nif the cluster uses token authentication (Ray enables it for `ray start --head` when ~/.ray/auth_token "
            "exists), set RAY_AUTH_MODE=token, with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, for this run")


class RayExecutor:
    def __init__(self, address: str | None = None, cpus: int = 1):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'transformer-bench[ray]' (or pip install ray)") \
                from None
        self.ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus = cpus
        self.started_here = False
        self.inflight: dict = {}  # ObjectRef -> (job, deadline)
        self.slots = 1

    def start(self, setup) -> None:
        ray = self.ray
        from ..env import REPO_ROOT

        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {"PYTHONPATH": path, "HARNESS_PLUGINS": ",".join(setup.plugins)}
        if not ray.is_initialized():
            handlers = _signal_handlers()
            try:
                # "local": a new Ray for this run, never one that a stale /tmp/ray/ray_current_cluster names (a
                # dead cluster there made ray.init wait on its address for minutes)
                ray.init(address=self.address or "local", runtime_env={"env_vars": env}, log_to_driver=False,
                         include_dashboard=False, configure_logging=False)
            except Exception as err:  # noqa: BLE001 - Ray raises several kinds; all mean "no cluster"
                raise ExecutorError(f"cannot start or reach Ray at {self.address or '(local)'}: "
                                    f"{type(err).__name__}: {err}{_auth_hint(self.address)}") from None
            finally:
                _restore(handlers)  # Ray's core worker installs its own SIGTERM handler (stack dump, then exit)
            self.started_here = self.address is None
        self.setup = setup
        self.key = f"{os.getpid()}-{time.time_ns()}"
        self.setup_ref = ray.put(setup)
        gpu = setup.device.type == "cuda"
        self.remote = ray.remote(_run_cell).options(num_gpus=1 if gpu else 0, num_cpus=1 if gpu else self.cpus,
                                                   max_retries=0)
        resources = ray.cluster_resources()
        per_task, kind = (1, "GPU") if gpu else (self.cpus, "CPU")
        self.slots = max(1, int(resources.get(kind, 0) // per_task))
        if not resources.get(kind):
            raise ExecutorError(f"the Ray cluster at {self.address or 'local'} has no {kind}: {resources}")

    def submit(self, job) -> None:
        if self.setup.device.type == "cpu":
            job = dataclasses.replace(job, threads=self.cpus)  # the task's torch threads = the CPUs it holds
        ref = self.remote.remote(self.setup_ref, self.key, job)
        grace = max(2.0, 0.1 * job.budget_s)
        self.inflight[ref] = (job, None, job.budget_s + grace)

    def wait(self):
        ray = self.ray
        while True:
            now = time.monotonic()
            for ref, (job, deadline, allowed) in list(self.inflight.items()):
                if deadline is None:  # the clock starts once the task is scheduled; approximated by submission
                    self.inflight[ref] = (job, now + allowed + 30.0, allowed)
            soonest = min(d for _, d, _ in self.inflight.values())
            done, _ = ray.wait(list(self.inflight), num_returns=1, timeout=max(0.0, min(soonest - now, 5.0)))
            if done:
                ref = done[0]
                job = self.inflight.pop(ref)[0]
                return job, self._rows(ref, job)
            for ref, (job, deadline, allowed) in list(self.inflight.items()):
                if time.monotonic() > deadline:
                    ray.cancel(ref, force=True)  # kills the worker process stuck in the cell
                    del self.inflight[ref]
                    return job, failure("timeout", f"cell exceeded its time budget of {job.budget_s:g} s and did "
                                                   f"not stop (Ray task cancelled after {allowed + 30:g} s)")

    def _rows(self, ref, job) -> list[dict]:
        ray = self.ray
        from ray import exceptions as rx

        try:
            return ray.get(ref)
        except rx.OutOfMemoryError as err:
            return failure("oom", f"Ray's memory monitor killed the task: {str(err).splitlines()[0]}")
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.LocalRayletDiedError) as err:
            return failure("crashed", f"the Ray worker running this cell died: {type(err).__name__}: "
                                      f"{' '.join(str(err).split())[:400]}")
        except rx.TaskCancelledError:
            return failure("timeout", "the Ray task was cancelled")
        except rx.RayTaskError as err:
            cause = err.cause if getattr(err, "cause", None) is not None else err
            return failure("error", f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")

    def close(self) -> None:
        for ref in list(self.inflight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.inflight.clear()
        if self.started_here:
            self.ray.shutdown()


def _signal_handlers() -> dict:
    """The Python handlers of SIGTERM and SIGINT now (the CLI's: a message, a partial report, the resume command)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
