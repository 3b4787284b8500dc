"""Performer (Choromanski et al. 2020): softmax attention approximated by FAVOR+ positive orthogonal random features,
computed as linear attention (``ops.favor``): O(n m d) time, O(n m) memory, and a constant (m x d) decoding state.

The random features are one (n_features x head_dim) matrix shared by all heads, drawn at construction from a
``torch.Generator`` seeded with ``seed`` and kept as a buffer, so ``forward``, ``reference`` and ``step`` use the same
features, a checkpoint carries them, and two layers built with the same seed are identical. The paper redraws the
features periodically during training; here a redraw is explicit: ``redraw_features(seed)`` draws a new matrix from
the given seed (and records it as the ``seed`` hyperparameter).
"""
from __future__ import annotations

import torch
from torch import nn

from ..mixer import Mixer, State
from ..ops.favor import (bidirectional_favor_attention, chunk_favor_attention, favor_attention_step,
                         naive_bidirectional_favor_attention, naive_favor_attention, orthogonal_random_features)
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


@register_mixer("performer", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Rethinking Attention with Performers", "2009.14794", 2020),
    claimed_time="O(N)", claimed_memory="O(N) (paper)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality=None,
    claim_source="guide 003, The Long-Context Ones (Performer: O(N)); memory from the paper (not in the guide); "
                 "not in the Master Comparison Table",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    positions="absolute",
    default_hparams={"n_features": 256, "seed": 0, "chunk_size": 64, "eps": 1e-6},
    test_hparams={"n_features": 48, "chunk_size": 16},
    notes="FAVOR+ with positive orthogonal random features (chi-distributed row norms), one feature matrix shared by "
          "the heads, drawn from `seed`; causal via the chunked prefix-sum form. No global key stabiliser (it would "
          "read future keys in causal mode).",
))
class Performer(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 n_features: int = 256, seed: int = 0, chunk_size: int = 64, eps: float = 1e-6):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if n_features < 1 or chunk_size < 1:
            raise ValueError(f"n_features and chunk_size must be >= 1, got {n_features}, {chunk_size}")
        self.n_features, self.seed, self.chunk_size, self.eps = n_features, seed, chunk_size, eps
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.register_buffer("projection", self._draw(seed))  # (m, Dh)

    def _draw(self, seed: int) -> torch.Tensor:
        return orthogonal_random_features(self.n_features, self.head_dim, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def redraw_features(self, seed: int) -> None:
        """Replace the random features by those drawn from ``seed`` (the paper's feature redrawing, made explicit)."""
        self.seed = seed
        self.projection.copy_(self._draw(seed))

    def _qkv(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> q, k, v, each (B, T, H, Dh)."""
        return self.project_heads(x, self.wq, self.wk, self.wv, fp32=fp32)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return self.prefill(x)[0]
        return self._out(bidirectional_favor_attention(*self._qkv(x), self.projection, eps=self.eps))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q, k, v = self._qkv(x)
        o, (S, z) = chunk_favor_attention(q, k, v, self.projection, chunk_size=self.chunk_size, eps=self.eps)
        return self._out(o), {"S": S, "z": z}

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"S": torch.zeros(batch, self.n_heads, self.n_features, self.head_dim, **kw),
                "z": torch.zeros(batch, self.n_heads, self.n_features, **kw)}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        q, k, v = (t[:, 0] for t in self._qkv(x_t[:, None, :]))  # (B, H, Dh)
        o, (S, z) = favor_attention_step(q, k, v, self.projection, (state["S"], state["z"]), eps=self.eps)
        return self._out(o[:, None])[:, 0], {"S": S, "z": z}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * self.n_heads * self.n_features * (self.head_dim + 1) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, fp32=True)
        if self.causal:
            o, _ = naive_favor_attention(q, k, v, self.projection, eps=self.eps)
        else:
            o = naive_bidirectional_favor_attention(q, k, v, self.projection, eps=self.eps)
        return self._out(o, fp32=True)
