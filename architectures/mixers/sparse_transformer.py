"""Sparse Transformer, strided pattern (Child et al. 2019): every head attends to the previous `stride` positions and
to every `stride`-th position before them, in one softmax (the paper's "merged head"; ``ops.strided_sparse`` documents
the pattern). With the stride ~ sqrt(n) a query reads ~ 2 sqrt(n) keys: O(n sqrt(n) d) time and O(n sqrt(n)) memory,
computed on gathered blocks, never an n x n matrix.

``stride=None`` (the default) applies the paper's rule l = ceil(sqrt(n)) to the length n of each forward call, so the
pattern depends on n. Decoding then continues with the stride of the prefill (kept in the state); decoding from an
empty state needs an explicit ``stride``. The KV cache keeps every key, as a later query may read any residue class
(state O(n), like ``standard``'s), and a step reads only its stride - 1 + pos/stride visible keys.
Positions enter through RoPE on q and k (the paper's learned position embeddings belong to the backbone).
"""
from __future__ import annotations

import torch

from ..mixer import State
from ..ops.softmax_attention import softmax_attention
from ..ops.strided_sparse import (default_stride, naive_strided_sparse_attention, strided_positions,
                                  strided_sparse_attention)
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention


@register_mixer("sparse_transformer", spec=MixerSpec(
    family="sparse attention",
    paper=Paper("Generating Long Sequences with Sparse Transformers", "1904.10509", 2019),
    claimed_time="O(N√N)", claimed_memory="O(N√N)",
    time_exponent=1.5, memory_exponent=1.5, state_exponent=1,
    claim_source="guide 003, Ten architectures table (one Complexity column, held to time and memory); "
                 "not in the Master Comparison Table",
    modes=frozenset({"causal", "decode"}),
    impls=("torch",),
    default_hparams={"stride": None, "rope_theta": 10000.0},
    test_hparams={"stride": 8},
    notes="Strided pattern, merged heads (paper eq. 4): query i sees j <= i with i - j < stride or "
          "(i - j) mod stride == 0. stride=None: ceil(sqrt(n)) of each call's length.",
))
class SparseTransformerAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 stride: int | None = None, rope_theta: float | None = 10000.0):
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be >= 1 or None, got {stride}")
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=rope_theta)
        self.stride = stride

    def _stride_for(self, seq_len: int) -> int:
        return self.stride if self.stride is not None else default_stride(seq_len)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return strided_sparse_attention(q, k, v, self._stride_for(q.shape[1]))

    # ---- decoding: the full KV cache, of which a step reads its visible positions -----------------------------------
    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        y, state = super().prefill(x)
        return y, {**state, "stride": self._stride_for(x.shape[1])}

    def init_state(self, batch: int) -> State:
        if self.stride is None:
            raise ValueError("stride=None takes ceil(sqrt(n)) of the prefill length; decoding from an empty state "
                             "needs an explicit stride")
        return {**super().init_state(batch), "stride": self.stride}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        pos, stride = state["pos"], state["stride"]
        q, k, v = self._qkv(x_t[:, None, :], pos)  # (B, 1, H, Dh)
        k = torch.cat([state["k"], k], dim=1)  # (B, pos + 1, H, Dh)
        v = torch.cat([state["v"], v], dim=1)
        idx = torch.tensor(strided_positions(pos, stride), dtype=torch.long, device=k.device)
        o = softmax_attention(q, k.index_select(1, idx), v.index_select(1, idx), causal=False)
        return self._out(o)[:, 0], {"k": k, "v": v, "pos": pos + 1, "stride": stride}

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0, fp32=True)
        return self._out(naive_strided_sparse_attention(q, k, v, self._stride_for(x.shape[1])), fp32=True)
