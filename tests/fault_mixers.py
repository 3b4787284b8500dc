"""Test-only mixers that fail the way real cells do in the wild: segfault, sys.exit, a deadlock in C, a Python
loop over its budget. Importing this module registers them; an isolated worker imports it through
``HARNESS_PLUGINS=tests.fault_mixers`` (or ``run --plugin tests.fault_mixers``), so they exist inside the worker too.
Names start with "_" so that no glob in a shipped suite picks them up.
"""
import ctypes
import os
import sys
import time

from torch import nn

from architectures import Mixer, MixerSpec, Paper
from architectures.registry import MIXERS, register_mixer

SPEC = MixerSpec(family="test fixture", paper=Paper("none", "0000.00000", 2000), claimed_time=None,
                 claimed_memory=None, time_exponent=None, memory_exponent=None, state_exponent=None,
                 modes=frozenset({"causal"}))


class _Base(Mixer):
    def __init__(self, d_model, n_heads, *, causal=True, impl=None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x)


class Segfault(_Base):
    def forward(self, x):
        print("about to dereference NULL", file=sys.stderr, flush=True)
        ctypes.string_at(0)  # SIGSEGV in C


class Exits(_Base):
    def forward(self, x):
        sys.exit(3)


class HardExit(_Base):
    def forward(self, x):
        os._exit(7)  # no Python cleanup: the process just ends


class DeadlockInC(_Base):
    """Locks a pthread mutex twice: blocked in C forever; no Python signal handler ever runs (SIGALRM cannot help)."""

    def forward(self, x):
        libc = ctypes.CDLL(None)
        mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER on glibc
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)
        return self.proj(x)


class Slow(_Base):
    def forward(self, x):
        time.sleep(60)
        return self.proj(x)


FIXTURES = {"_fault_ok": _Base, "_fault_segfault": Segfault, "_fault_exit": Exits, "_fault_hard_exit": HardExit,
            "_fault_deadlock": DeadlockInC, "_fault_slow": Slow}


def register() -> None:
    """Register the fixtures (idempotent). Importing the module does it: that is how a worker gets them."""
    for name, cls in FIXTURES.items():
        if name not in MIXERS:
            register_mixer(name, spec=SPEC)(type(cls.__name__, (cls,), {}))


def unregister() -> None:
    """Take them out again, so that registry-wide tests (which would run a deadlocking mixer) never see them."""
    for name in FIXTURES:
        if name in MIXERS:
            MIXERS.unregister(name)


register()
