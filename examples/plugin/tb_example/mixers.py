"""``example_cummean``: each position outputs a gated running mean of the value projections of the tokens so far,
y_t = W_o (sigmoid(W_g x_t) * mean_{s <= t} W_v x_s). Not a published method: the smallest mixer with a decode state
(the running sum and the count: constant size), written as a plugin would be."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from architectures import Mixer, MixerSpec, Paper, register_mixer

SPEC = MixerSpec(
    family="example plugin",
    paper=Paper("Example plugin: a gated causal running mean (not a published method)", "0000.00000", 2025),
    claimed_time="O(nd^2)", claimed_memory="O(nd)", time_exponent=1, memory_exponent=1, state_exponent=0,
    claim_source="examples/plugin (illustration)",
    modes=frozenset({"causal", "decode"}), impls=("torch",), positions="absolute",
)


class CumulativeMean(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if not causal:
            raise ValueError("example_cummean is causal only")
        self.wg = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)

    def _gv(self, x: torch.Tensor, fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if fp32:
            x = x.float()
            return torch.sigmoid(F.linear(x, self.wg.weight.float())), F.linear(x, self.wv.weight.float())
        return torch.sigmoid(self.wg(x)), self.wv(x)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return F.linear(o, self.wo.weight.float()) if fp32 else self.wo(o)

    def sums(self, v: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> the sum of the values each position averages (B, T, D)."""
        return v.cumsum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor):
        g, v = self._gv(x)
        s = self.sums(v)  # (B, T, D)
        count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]  # (1, T, 1)
        state = {"sum": s[:, -1].clone(), "count": count[:, -1].expand(x.shape[0], 1).clone()}
        return self._out(g * s / count), state

    def init_state(self, batch: int):
        kw = dict(device=self._device, dtype=self._dtype)
        return {"sum": torch.zeros(batch, self.d_model, **kw), "count": torch.zeros(batch, 1, **kw)}

    def step(self, x_t: torch.Tensor, state):
        g, v = self._gv(x_t)  # (B, D)
        s, count = state["sum"] + v, state["count"] + 1
        return self._out(g * s / count), {"sum": s, "count": count}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * (self.d_model + 1) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper-style loop, fp32: position by position over the tokens it may see."""
        g, v = self._gv(x, fp32=True)
        out = torch.zeros_like(v)
        for t in range(x.shape[1]):
            seen = self.visible(t, x.shape[1])
            out[:, t] = g[:, t] * v[:, seen].mean(dim=1)
        return self._out(out, fp32=True)

    def visible(self, t: int, T: int) -> slice:
        """The positions whose values position t averages."""
        return slice(0, t + 1)


register_mixer("example_cummean", spec=SPEC)(CumulativeMean)
