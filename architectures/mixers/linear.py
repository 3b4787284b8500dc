"""Linear (kernel) attention, Katharopoulos et al. 2020: softmax(q k^T) is replaced by phi(q) phi(k)^T with
phi = elu + 1, and the product is reassociated, phi(Q) (phi(K)^T V): O(n d^2) time, O(n d) memory, and a constant
(d x d) decoding state. The causal form is chunkwise (``ops.linear_attention``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.linear_attention import (bidirectional_linear_attention, chunk_linear_attention,
                                    linear_attention_step, naive_bidirectional_linear_attention,
                                    naive_linear_attention)
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


@register_mixer("linear", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention", "2006.16236", 2020),
    claimed_time="O(nd^2)", claimed_memory="O(nd)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="~95%",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    positions="absolute",
    default_hparams={"chunk_size": 64, "eps": 1e-6},
    test_hparams={"chunk_size": 16},
))
class LinearAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 64, eps: float = 1e-6):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size, self.eps = chunk_size, eps
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)

    def _features(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> phi(q), phi(k), v, each (B, T, H, Dh)."""
        B, T, _ = x.shape
        shape = (B, T, self.n_heads, self.head_dim)
        if fp32:
            x = x.float()
            q, k, v = (F.linear(x, m.weight.float()) for m in (self.wq, self.wk, self.wv))
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        return elu_feature_map(q.view(shape)), elu_feature_map(k.view(shape)), v.view(shape)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0] if self.causal else self._out(bidirectional_linear_attention(
            *self._features(x), eps=self.eps))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q, k, v = self._features(x)
        o, (S, z) = chunk_linear_attention(q, k, v, chunk_size=self.chunk_size, eps=self.eps)
        return self._out(o), {"S": S, "z": z}

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"S": torch.zeros(batch, self.n_heads, self.head_dim, self.head_dim, **kw),
                "z": torch.zeros(batch, self.n_heads, self.head_dim, **kw)}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        q, k, v = (t[:, 0] for t in self._features(x_t[:, None, :]))  # (B, H, Dh)
        o, (S, z) = linear_attention_step(q, k, v, (state["S"], state["z"]), eps=self.eps)
        return self._out(o[:, None])[:, 0], {"S": S, "z": z}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * self.n_heads * (self.head_dim * self.head_dim + self.head_dim) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._features(x, fp32=True)
        if self.causal:
            o, _ = naive_linear_attention(q, k, v, eps=self.eps)
        else:
            o = naive_bidirectional_linear_attention(q, k, v, eps=self.eps)
        return self._out(o, fp32=True)
