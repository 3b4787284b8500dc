"""Sparse Transformer, strided pattern (Child et al. 2019): half the heads attend to the previous `stride` positions,
the other half to every `stride`-th position back (``ops.strided_sparse``, which documents the pattern). With the
stride ~ sqrt(n) every head reads ~ sqrt(n) keys per query: O(n sqrt(n) d) time and O(n sqrt(n)) memory, computed on
gathered blocks, never an n x n matrix.

``stride=None`` (the default) applies the paper's rule l = ceil(sqrt(n)) to the length n of each forward call, so the
pattern depends on n. Decoding then continues with the stride of the prefill (kept in the state); decoding from an
empty state needs an explicit ``stride``. The KV cache keeps the last stride - 1 keys of the local heads and every key
of the strided heads (a future query may read any residue class), so the state grows as n * H/2.
Positions enter through RoPE on q and k (the paper's learned position embeddings belong to the backbone).
"""
from __future__ import annotations

import torch

from ..mixer import State
from ..ops.softmax_attention import softmax_attention
from ..ops.strided_sparse import (default_stride, n_local_heads, naive_strided_sparse_attention,
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
    notes="Strided pattern, one pattern per head (paper 4.3, multi-head option): heads [0, H - H//2) local "
          "(i - stride < j <= i), the rest strided ((i - j) mod stride == 0). stride=None: ceil(sqrt(n)) per call.",
))
class SparseTransformerAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 stride: int | None = None, rope_theta: float | None = 10000.0):
        if n_heads < 2:
            raise ValueError("the strided pattern needs n_heads >= 2 (local heads and strided heads)")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be >= 1 or None, got {stride}")
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=rope_theta)
        self.stride = stride
        self.n_local = n_local_heads(n_heads)

    def _stride_for(self, seq_len: int) -> int:
        return self.stride if self.stride is not None else default_stride(seq_len)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return strided_sparse_attention(q, k, v, self._stride_for(q.shape[1]))

    # ---- decoding: local heads keep a rolling window, strided heads every key -------------------------------------
    def _split(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t[:, :, :self.n_local], t[:, :, self.n_local:]  # (B, S, H_local, Dh), (B, S, H_strided, Dh)

    @staticmethod
    def _last(t: torch.Tensor, keep: int) -> torch.Tensor:
        """The last `keep` rows as their own storage (a slice would keep the whole one alive)."""
        return t[:, max(t.shape[1] - keep, 0):].clone(memory_format=torch.contiguous_format)

    def _state(self, k: torch.Tensor, v: torch.Tensor, pos: int, stride: int) -> State:
        (kl, ks), (vl, vs) = self._split(k), self._split(v)
        return {"k_local": self._last(kl, stride - 1), "v_local": self._last(vl, stride - 1),
                "k_strided": ks.clone(memory_format=torch.contiguous_format),
                "v_strided": vs.clone(memory_format=torch.contiguous_format), "pos": pos, "stride": stride}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q, k, v = self._qkv(x, 0)
        stride = self._stride_for(x.shape[1])
        y = self._out(strided_sparse_attention(q, k, v, stride))
        return y, self._state(k, v, x.shape[1], stride)

    def init_state(self, batch: int) -> State:
        if self.stride is None:
            raise ValueError("stride=None takes ceil(sqrt(n)) of the prefill length; decoding from an empty state "
                             "needs an explicit stride")
        empty = torch.zeros(batch, 0, self.n_heads, self.head_dim, device=self._device, dtype=self._dtype)
        return self._state(empty, empty, 0, self.stride)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        pos, stride = state["pos"], state["stride"]
        q, k, v = self._qkv(x_t[:, None, :], pos)  # (B, 1, H, Dh)
        (ql, qs), (kl, ks), (vl, vs) = self._split(q), self._split(k), self._split(v)
        kl = torch.cat([state["k_local"], kl], dim=1)  # (B, <= stride, H_local, Dh): exactly the visible window
        vl = torch.cat([state["v_local"], vl], dim=1)
        ks = torch.cat([state["k_strided"], ks], dim=1)  # (B, pos + 1, H_strided, Dh)
        vs = torch.cat([state["v_strided"], vs], dim=1)
        first = pos % stride  # the visible strided keys: pos, pos - stride, ... down to pos mod stride
        o_local = softmax_attention(ql, kl, vl, causal=False)
        o_strided = softmax_attention(qs, ks[:, first::stride], vs[:, first::stride], causal=False)
        y = self._out(torch.cat([o_local, o_strided], dim=2))[:, 0]
        new = {"k_local": self._last(kl, stride - 1), "v_local": self._last(vl, stride - 1),
               "k_strided": ks, "v_strided": vs, "pos": pos + 1, "stride": stride}
        return y, new

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        kept_local = min(seq_len, self._stride_for(seq_len) - 1)
        rows = self.n_local * kept_local + (self.n_heads - self.n_local) * seq_len
        return 2 * batch * rows * self.head_dim * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0, fp32=True)
        return self._out(naive_strided_sparse_attention(q, k, v, self._stride_for(x.shape[1])), fp32=True)
