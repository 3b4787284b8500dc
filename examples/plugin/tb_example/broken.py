"""A deliberately broken variant of ``example_cummean``: every position also averages the NEXT token's value, a
causality leak. Its forward and its reference agree (the oracle check passes); the kit's causality and decode checks
must fail it. Not registered by the entry point: ``register()`` adds it under a test-only name."""
from __future__ import annotations

import torch

from architectures import register_mixer

from .mixers import SPEC, CumulativeMean

NAME = "_example_leaky"


class LeakyCumulativeMean(CumulativeMean):
    def sums(self, v: torch.Tensor) -> torch.Tensor:
        nxt = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # value of t+1 (zero at the end)
        return v.cumsum(dim=1) + nxt

    def prefill(self, x: torch.Tensor):
        g, v = self._gv(x)
        s = self.sums(v)
        count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None] + 1
        count[:, -1] -= 1  # the last position has no next token
        state = {"sum": v.sum(dim=1), "count": torch.full((x.shape[0], 1), float(x.shape[1]), dtype=x.dtype)}
        return self._out(g * s / count), state

    def visible(self, t: int, T: int) -> slice:
        return slice(0, min(t + 2, T))


def register() -> str:
    register_mixer(NAME, spec=SPEC)(LeakyCumulativeMean)
    return NAME
