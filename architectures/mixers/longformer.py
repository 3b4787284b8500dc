"""Longformer (Beltagy et al. 2020): sliding-window attention plus global tokens at configurable positions
(``ops.longformer`` documents the pattern). ``window`` is the total two-sided window as in Hugging Face's
``attention_window``: a token sees window // 2 neighbours on each side (only the left ones in causal mode). Global
tokens see every token and are seen by every token; in causal mode both only towards the past. O(n (w + g) d) time,
O(n (w + g)) memory, never an n x n matrix.

One set of projections serves local and global attention (the paper's separate global projections, Hugging Face's
``query_global``/``key_global``/``value_global``, are tied to the local ones). Positions enter through RoPE (the
paper's learned absolute position embeddings belong to the backbone); ``rope_theta=None`` turns it off.

Decoding (causal mode) keeps the keys that a later query can still read: the last window // 2 and the global tokens
- and, while a global token is still to come (it reads its whole past), every key. With the default global token at
position 0 the cache is window // 2 + 1 keys after the first window.
"""
from __future__ import annotations

import torch

from ..mixer import State
from ..ops.longformer import global_index, longformer_attention, naive_longformer_attention
from ..ops.softmax_attention import softmax_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._kv_attention import KVCacheAttention


@register_mixer("longformer", spec=MixerSpec(
    family="sparse attention",
    paper=Paper("Longformer: The Long-Document Transformer", "2004.05150", 2020),
    claimed_time="O(N)", claimed_memory="O(N)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claim_source="guide 003, Ten architectures table (one Complexity column, held to time and memory); guide 000 "
                 "Complexity Reduction: 'Local + global [CLS] tokens'",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    default_hparams={"window": 256, "global_positions": (0,), "rope_theta": 10000.0},
    test_hparams={"window": 16, "global_positions": (0, 21, 40)},
    notes="window = total two-sided window (HF attention_window); global tokens at absolute positions, tied "
          "global projections. Decode state is bounded once the last global position has passed.",
))
class LongformerAttention(KVCacheAttention):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 window: int = 256, global_positions: tuple[int, ...] = (0,), rope_theta: float | None = 10000.0):
        if window < 2 or window % 2:
            raise ValueError(f"window is the total two-sided window and must be even and >= 2, got {window}")
        if any(p < 0 for p in global_positions):
            raise ValueError(f"global positions must be >= 0, got {global_positions}")
        super().__init__(d_model, n_heads, causal=causal, impl=impl, n_kv_heads=n_heads, rope_theta=rope_theta)
        self.window = window
        self.global_positions = tuple(global_positions)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return longformer_attention(q, k, v, window=self.window, global_positions=self.global_positions,
                                    causal=self.causal)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0, fp32=True)
        o = naive_longformer_attention(q, k, v, window=self.window, global_positions=self.global_positions,
                                       causal=self.causal)
        return self._out(o, fp32=True)

    # ---- decoding (causal) ----------------------------------------------------------------------------------------
    def _kept(self, n: int) -> list[int]:
        """Positions (< n) whose keys a query at position >= n can still read, oldest first."""
        if any(p >= n for p in self.global_positions):
            return list(range(n))  # a global token is still to come and will read its whole past
        lo = max(0, n - self.window // 2)
        return sorted(set(global_index(self.global_positions, lo)) | set(range(lo, n)))

    def _check_decode(self) -> None:
        if not self.causal:
            raise ValueError("longformer decodes in causal mode only")

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        self._check_decode()
        q, k, v = self._qkv(x, 0)
        y = self._out(self._attend(q, k, v))
        idx = torch.tensor(self._kept(x.shape[1]), dtype=torch.long, device=x.device)
        return y, {"k": k.index_select(1, idx), "v": v.index_select(1, idx), "pos": x.shape[1]}

    def init_state(self, batch: int) -> State:
        self._check_decode()
        return super().init_state(batch)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        p = state["pos"]
        q, k, v = self._qkv(x_t[:, None, :], p)  # (B, 1, H, Dh)
        positions = self._kept(p) + [p]  # of the rows of k, v below
        k = torch.cat([state["k"], k], dim=1)  # (B, S + 1, H, Dh)
        v = torch.cat([state["v"], v], dim=1)
        glob = set(self.global_positions)
        if p in glob:
            rows = list(range(len(positions)))  # a global token reads its whole past (all of it is kept)
        else:
            rows = [i for i, j in enumerate(positions) if j >= p - self.window // 2 or j in glob]
        idx = torch.tensor(rows, dtype=torch.long, device=k.device)
        o = softmax_attention(q, k.index_select(1, idx), v.index_select(1, idx), causal=False)
        y = self._out(o)[:, 0]
        keep = set(self._kept(p + 1))
        idx = torch.tensor([i for i, j in enumerate(positions) if j in keep], dtype=torch.long, device=k.device)
        return y, {"k": k.index_select(1, idx), "v": v.index_select(1, idx), "pos": p + 1}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return 2 * batch * len(self._kept(seq_len)) * self.n_heads * self.head_dim * dtype.itemsize
