"""Reformer's LSH attention (Kitaev et al. 2020): shared query-keys hashed by random rotations into ``n_buckets``
buckets, ``n_hashes`` rounds; per round, tokens sorted by (bucket, position) attend within their bucket to their own
chunk of ``chunk_size`` and the previous one; rounds combined by their logsumexp (``ops.lsh_attention``, whose
docstring also says where and why the chunking differs from trax / Hugging Face). O(n log n) time from the sort and
O(n * chunk_size) for the attention, never an n x n matrix.

Hyperparameter rules, explicit:
- ``n_buckets`` is fixed, not derived from the length: a token's bucket must not depend on how long the sequence is,
  which is what makes the layer exactly causal and lets ``step`` reproduce ``forward``. The paper's guideline,
  buckets of about chunk_size / 2 tokens (n_buckets ~ 2 n / chunk_size), holds at n = n_buckets * chunk_size / 2
  (2048 with the defaults); at longer n a bucket spans several chunks and a query sees the ~2 chunk_size most recent
  tokens of its bucket.
- The rotations, (H, head_dim, n_hashes, n_buckets / 2) Gaussian, one per head and round as in Hugging Face, are
  drawn at construction from a ``torch.Generator`` seeded with ``seed`` and kept as a buffer (forward, reference and
  step hash identically).

No positional encoding inside the layer (the paper adds position embeddings at the input); the causal mask is by
original position. Decoding keeps the projected qk and v of every token (a KV cache, O(n) state) and, for the new
token, rebuilds its visible set from the cache: same bucket, rank window, union over rounds, exactly the forward's
rule; a step costs O(n * n_hashes * n_buckets * d) for re-hashing the cache (buckets are not cached: the state holds
only tensors of the model's dtype, so its size is exactly 2 n H d elements).
"""
from __future__ import annotations

import torch
from torch import nn

from ..mixer import Mixer, State
from ..ops.lsh_attention import lsh_attention, lsh_hash, naive_lsh_attention, normalize_keys
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


@register_mixer("reformer", spec=MixerSpec(
    family="sparse attention (hashed)",
    paper=Paper("Reformer: The Efficient Transformer", "2001.04451", 2020),
    claimed_time="O(n log n)", claimed_memory="O(n log n)",
    time_exponent=1, memory_exponent=1, state_exponent=1,
    claimed_quality="~97%",
    modes=frozenset({"causal", "decode"}),
    impls=("torch",),
    positions="absolute",
    default_hparams={"n_hashes": 2, "n_buckets": 64, "chunk_size": 64, "seed": 0},
    test_hparams={"n_hashes": 2, "n_buckets": 4, "chunk_size": 8},
    notes="Shared QK (keys = unit-length queries), angular LSH with seeded random rotations, chunks counted from the "
          "start of each bucket (own chunk + previous), causal by position, self only if nothing else is visible, "
          "rounds combined by logsumexp with duplicate keys counted once. n_buckets fixed (not ~2n/chunk_size) so "
          "that hashing does not depend on n: exactly causal, and decoding equals the forward. Registered as the causal LM "
          "layer (the paper's enwik8/imagenet64 setting); the op also has the encoder form (causal=False).",
))
class Reformer(Mixer):
    # A bucket is a discrete choice: a bf16 rounding of qk can move a token to another bucket, which changes by O(1)
    # the outputs of the queries that see it (tests/test_mixers.py checks most positions; tests/test_reformer.py
    # compares bf16 with fp32 under the same buckets).
    discrete_routing = True

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 n_hashes: int = 2, n_buckets: int = 64, chunk_size: int = 64, seed: int = 0):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if n_hashes < 1 or chunk_size < 1:
            raise ValueError(f"n_hashes and chunk_size must be >= 1, got {n_hashes}, {chunk_size}")
        if n_buckets < 2 or n_buckets % 2:
            raise ValueError(f"n_buckets must be even and >= 2 (argmax over [xR; -xR]), got {n_buckets}")
        self.n_hashes, self.n_buckets, self.chunk_size, self.seed = n_hashes, n_buckets, chunk_size, seed
        self.wqk = nn.Linear(d_model, d_model, bias=False)  # shared query-key projection
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("rotations", torch.randn(n_heads, self.head_dim, n_hashes, n_buckets // 2, generator=g))

    def _qkv(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> qk, v, each (B, T, H, Dh)."""
        return self.project_heads(x, self.wqk, self.wv, fp32=fp32)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    def buckets(self, x: torch.Tensor) -> torch.Tensor:
        """The hash buckets the forward uses: (B, T, H, n_hashes)."""
        return lsh_hash(self._qkv(x)[0], self.rotations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qk, v = self._qkv(x)
        o = lsh_attention(qk, v, lsh_hash(qk, self.rotations), chunk_size=self.chunk_size, causal=self.causal)
        return self._out(o)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        qk, v = self._qkv(x)
        o = lsh_attention(qk, v, lsh_hash(qk, self.rotations), chunk_size=self.chunk_size, causal=True)
        return self._out(o), {"qk": qk, "v": v, "pos": x.shape[1]}

    def init_state(self, batch: int) -> State:
        empty = torch.zeros(batch, 0, self.n_heads, self.head_dim, device=self._device, dtype=self._dtype)
        return {"qk": empty, "v": empty.clone(), "pos": 0}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        qk_t, v_t = self._qkv(x_t[:, None, :])  # (B, 1, H, Dh)
        qk = torch.cat([state["qk"], qk_t], dim=1)  # (B, S, H, Dh), the new token last
        v = torch.cat([state["v"], v_t], dim=1)
        buckets = lsh_hash(qk, self.rotations)  # (B, S, H, R)
        same = buckets == buckets[:, -1:]  # (B, S, H, R): same bucket as the new token, per round
        rank = same.long().cumsum(dim=1) - 1  # rank within the bucket (valid where same)
        chunk = rank // self.chunk_size
        visible = (same & (chunk >= chunk[:, -1:] - 1)).any(dim=-1)  # (B, S, H): union over rounds
        others = visible.clone()
        others[:, -1] = False
        visible[:, -1] = ~others.any(dim=1)  # itself only if nothing else is visible
        scores = torch.einsum("bhd,bshd->bsh", qk_t[:, 0], normalize_keys(qk))  # (B, S, H)
        scores = scores.masked_fill(~visible, float("-inf"))
        o = torch.einsum("bsh,bshd->bhd", scores.softmax(dim=1), v)  # (B, H, Dh)
        return self._out(o[:, None])[:, 0], {"qk": qk, "v": v, "pos": state["pos"] + 1}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return 2 * batch * seq_len * self.n_heads * self.head_dim * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        qk, v = self._qkv(x, fp32=True)
        o = naive_lsh_attention(qk, v, lsh_hash(qk, self.rotations), chunk_size=self.chunk_size, causal=self.causal)
        return self._out(o, fp32=True)
