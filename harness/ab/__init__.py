"""``python -m harness ab BASE HEAD SUITE``: a same-machine A/B comparison of two revisions' speed.

Modules: ``trees`` (BASE / HEAD as directories or git worktrees; the suite resolved in HEAD), ``driver`` (the
process that measures one side, run inside that side's tree), ``side`` (the parent's handle on it: the isolated
executor with the driver as its worker), ``run`` (rounds, pairing, verdicts), ``stats`` (paired ratio, sign-test
interval, verdict), ``output`` (ab.md, ab.json, measurements.jsonl, pytest-benchmark JSON).
"""
from .run import ABResult, ABSettings, run_ab
from .trees import ABInputError

__all__ = ["ABInputError", "ABResult", "ABSettings", "run_ab"]
