"""Transformer-XL attention (Dai et al. 2019): segment-level recurrence with relative positional encoding
(``ops.relative_segment`` documents the scores). The sequence is processed in segments of ``segment_len`` tokens;
each attends causally to itself and to a memory of the ``mem_len`` hidden states before it, which are the layer's
inputs from earlier segments under stop-gradient (the paper's SG(h_{tau-1})): keys and values of memory positions
are projected from ``x.detach()``, so no gradient reaches earlier segments' inputs while the projections still learn.
For a fixed segment and memory, cost is O(L (M + L) d) per segment: linear in the total length.

Decoding caches the keys and values of the memory plus the current partial segment (at most mem_len + segment_len - 1
positions, a bounded state), dropping what falls out of the memory at each segment boundary, so that step-by-step
decoding equals the segment-wise forward exactly. The positional term is recomputed from distances (the relative
encoding needs no absolute position).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.relative_segment import (naive_rel_segment_attention, rel_attention_step, rel_segment_attention,
                                    sinusoid_embedding)
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


@register_mixer("transformer_xl", spec=MixerSpec(
    family="recurrent softmax attention",
    paper=Paper("Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context", "1901.02860", 2019),
    claimed_time="O(N²) per segment", claimed_memory="O(N²) per segment",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claim_source="guide 003, Ten architectures table: 'O(N²) per segment' (one Complexity column, held to time and "
                 "memory): quadratic in the segment, linear in the total length for fixed segment and memory",
    modes=frozenset({"causal", "decode"}),
    impls=("torch",),
    default_hparams={"segment_len": 128, "mem_len": 128},
    test_hparams={"segment_len": 16, "mem_len": 12},
    notes="Query at position i of the segment starting at s sees keys max(0, s - mem_len) .. i. Relative scores "
          "(q+u)k + (q+v) W_R R_{i-j}, scaled by 1/sqrt(head_dim); memory under stop-gradient.",
))
class TransformerXLAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 segment_len: int = 128, mem_len: int = 128):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if segment_len < 1 or mem_len < 0:
            raise ValueError(f"need segment_len >= 1 and mem_len >= 0, got {segment_len}, {mem_len}")
        self.segment_len, self.mem_len = segment_len, mem_len
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wr = nn.Linear(d_model, d_model, bias=False)  # W_{k,R}: projects the sinusoid R_{i-j} to keys
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.u = nn.Parameter(torch.randn(n_heads, self.head_dim) * 0.02)  # r_w_bias: global content bias
        self.v = nn.Parameter(torch.randn(n_heads, self.head_dim) * 0.02)  # r_r_bias: global position bias

    # ---- projections --------------------------------------------------------------------------------------------
    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(*t.shape[:-1], self.n_heads, self.head_dim)  # (..., D) -> (..., H, Dh)

    def _rel(self, fp32: bool = False) -> torch.Tensor:
        """W_kR R_d for the distances d = 0 .. mem_len + segment_len - 1: (M + L, H, Dh)."""
        dist = torch.arange(self.mem_len + self.segment_len, device=self.wr.weight.device)
        R = sinusoid_embedding(dist, self.d_model)  # (M + L, D) in fp32
        w = self.wr.weight.float() if fp32 else self.wr.weight
        return self._heads(F.linear(R.to(w.dtype), w))

    def _project(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> q, k, v, k_mem, v_mem: (B, T, H, Dh); the memory ones from the stop-gradient input."""
        wq, wk, wv = (m.weight.float() if fp32 else m.weight for m in (self.wq, self.wk, self.wv))
        x = x.float() if fp32 else x
        q, k, v = (self._heads(F.linear(x, w)) for w in (wq, wk, wv))
        if torch.is_grad_enabled() and x.requires_grad:
            x_sg = x.detach()
            k_mem, v_mem = self._heads(F.linear(x_sg, wk)), self._heads(F.linear(x_sg, wv))
        else:  # same values; a separate projection is only needed to cut the gradient
            k_mem, v_mem = k, v
        return q, k, v, k_mem, v_mem

    def _biases(self, fp32: bool = False):
        return (self.u.float(), self.v.float()) if fp32 else (self.u, self.v)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    # ---- the contract -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, k_mem, v_mem = self._project(x)
        o = rel_segment_attention(q, k, v, k_mem, v_mem, self._rel(), *self._biases(),
                                  segment_len=self.segment_len, mem_len=self.mem_len)
        return self._out(o)

    def _window_start(self, n: int) -> int:
        """First position a query at position >= n can still read: the memory of the segment holding n."""
        return max(0, (n // self.segment_len) * self.segment_len - self.mem_len)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q, k, v, k_mem, v_mem = self._project(x)
        o = rel_segment_attention(q, k, v, k_mem, v_mem, self._rel(), *self._biases(),
                                  segment_len=self.segment_len, mem_len=self.mem_len)
        n = x.shape[1]
        lo = self._window_start(n)
        state = {"k": k_mem[:, lo:].detach().clone(), "v": v_mem[:, lo:].detach().clone(), "pos": n}
        return self._out(o), state

    def init_state(self, batch: int) -> State:
        empty = torch.zeros(batch, 0, self.n_heads, self.head_dim, device=self._device, dtype=self._dtype)
        return {"k": empty, "v": empty.clone(), "pos": 0}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        p = state["pos"]
        q, k, v = (self._heads(m(x_t)) for m in (self.wq, self.wk, self.wv))  # (B, H, Dh)
        k = torch.cat([state["k"], k[:, None]], dim=1)  # (B, S, H, Dh): positions window_start(p) .. p
        v = torch.cat([state["v"], v[:, None]], dim=1)
        o = rel_attention_step(q, k, v, self._rel(), *self._biases())
        drop = self._window_start(p + 1) - self._window_start(p)  # rows leaving the memory at a segment boundary
        if drop:
            k, v = k[:, drop:].clone(), v[:, drop:].clone()
        return self._out(o), {"k": k, "v": v, "pos": p + 1}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        rows = seq_len - self._window_start(seq_len)
        return 2 * batch * rows * self.n_heads * self.head_dim * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, k_mem, v_mem = self._project(x, fp32=True)
        o = naive_rel_segment_attention(q, k, v, k_mem, v_mem, self._rel(fp32=True), *self._biases(fp32=True),
                                        segment_len=self.segment_len, mem_len=self.mem_len)
        return self._out(o, fp32=True)
