"""Shared plumbing of the softmax-attention mixers that decode with a KV cache (standard, flash, gqa, sliding window).

Projections (no bias, as in LLaMA), rotary positions, the cache as returned state, and the fp32 reference built on
``naive_softmax_attention``. A subclass chooses only how the attention itself is computed: ``_attend`` for the
parallel form and ``_attend_step`` for one query against the cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.rope import apply_rope
from ..ops.softmax_attention import naive_softmax_attention, softmax_attention


class KVCacheAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool, impl: str | None, n_kv_heads: int,
                 rope_theta: float | None, cache_window: int | None = None, head_dim: int | None = None,
                 bias: bool = False):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if head_dim is not None:  # a head size other than d_model / n_heads (PaLM-540B: 48 heads of 256 at 18432)
            if head_dim < 1:
                raise ValueError(f"head_dim must be >= 1, got {head_dim}")
            self.head_dim = head_dim
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a positive multiple of n_kv_heads={n_kv_heads}")
        self.kv_heads = n_kv_heads
        self.rope_theta = rope_theta
        self._cache_window = cache_window  # keep only the last (window - 1) keys between steps
        self.wq = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)  # bias: GPT-2 and GPT-3 have them
        self.wk = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.wv = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.wo = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    # ---- projections --------------------------------------------------------------------------------------------
    def _qkv(self, x: torch.Tensor, start: int, fp32: bool = False):
        """x: (B, T, D) at absolute positions start..start+T-1 -> q (B, T, H, Dh), k, v (B, T, H_kv, Dh)."""
        B, T, _ = x.shape
        x = x.float() if fp32 else x
        q = self._lin(x, self.wq, fp32).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        k = self._lin(x, self.wk, fp32).view(B, T, self.kv_heads, self.head_dim)  # (B, T, H_kv, Dh)
        v = self._lin(x, self.wv, fp32).view(B, T, self.kv_heads, self.head_dim)
        if self.rope_theta is not None:
            positions = torch.arange(start, start + T, device=x.device)
            q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)
        return q, k, v

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        B, T = o.shape[:2]
        o = o.reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H, Dh) -> (B, T, H*Dh)
        return self._lin(o, self.wo, fp32)

    @staticmethod
    def _lin(x: torch.Tensor, m: nn.Linear, fp32: bool) -> torch.Tensor:
        if not fp32:
            return m(x)
        return F.linear(x, m.weight.float(), None if m.bias is None else m.bias.float())

    # ---- what a subclass chooses --------------------------------------------------------------------------------
    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _attend_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query (B, 1, H, Dh) against the whole cache (B, S, H_kv, Dh): explicit attention by default."""
        return softmax_attention(q, k, v, causal=False)

    def _reference_window(self) -> int | None:
        return None

    # ---- the contract -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0)
        return self._out(self._attend(q, k, v))

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        """The part of the cache to carry on. A trimmed cache is copied: a slice would keep the whole storage."""
        if self._cache_window is None or t.shape[1] < self._cache_window:
            return t
        return t[:, t.shape[1] - (self._cache_window - 1):].clone()

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q, k, v = self._qkv(x, 0)
        y = self._out(self._attend(q, k, v))
        return y, {"k": self._keep(k), "v": self._keep(v), "pos": x.shape[1]}

    def init_state(self, batch: int) -> State:
        empty = torch.zeros(batch, 0, self.kv_heads, self.head_dim, device=self._device, dtype=self._dtype)
        return {"k": empty, "v": empty.clone(), "pos": 0}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        q, k, v = self._qkv(x_t[:, None, :], state["pos"])  # (B, 1, ., Dh)
        k = torch.cat([state["k"], k], dim=1)  # (B, S+1, H_kv, Dh)
        v = torch.cat([state["v"], v], dim=1)
        y = self._out(self._attend_step(q, k, v))[:, 0]
        return y, {"k": self._keep(k), "v": self._keep(v), "pos": state["pos"] + 1}

    def extend(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """T new tokens at once against the cache (speculative decoding's verification): x (B, T, D) -> (B, T, D).
        Equal to T calls of ``step``; the queries are causal among themselves and see the whole cache."""
        if self._cache_window is not None:
            raise NotImplementedError(f"{type(self).__name__}: extend with a windowed cache")
        q, k, v = self._qkv(x, state["pos"])  # (B, T, ., Dh) at positions pos..pos+T-1
        k = torch.cat([state["k"], k], dim=1)  # (B, S+T, H_kv, Dh)
        v = torch.cat([state["v"], v], dim=1)
        y = self._out(self._attend_cached(q, k, v))
        return y, {"k": k, "v": v, "pos": state["pos"] + x.shape[1]}

    def _attend_cached(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """T queries, the last T positions of a cache of S keys (causal among themselves). Only the mixers whose
        attention is exact over the whole cache define it (standard, alibi): others raise rather than be wrong."""
        raise NotImplementedError(f"{type(self).__name__} does not implement extend (multi-token decoding)")

    @staticmethod
    def truncate(state: State, length: int) -> State:
        """The cache of the first ``length`` tokens (a rejected draft is rolled back). Copies: no storage kept."""
        return {"k": state["k"][:, :length].clone(), "v": state["v"][:, :length].clone(), "pos": length}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        kept = seq_len if self._cache_window is None else min(seq_len, self._cache_window - 1)
        return 2 * batch * kept * self.kv_heads * self.head_dim * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0, fp32=True)
        o = naive_softmax_attention(q, k, v, causal=self.causal, window=self._reference_window())
        return self._out(o, fp32=True)
