"""Multi-scale retention, the mixer of RetNet (Sun et al. 2023, "Retentive Network: A Successor to Transformer for
Large Language Models", arXiv:2307.08621):

    q = (x W_Q) * Theta, k = (x W_K) * conj(Theta)       the xPos-style rotation e^{i n theta}: RoPE on q and k
    v = x W_V (value dim expand_v * d = 2d)
    S_t = gamma_h S_(t-1) + k_t v_t^T,  o_t = S_t^T q_t / sqrt(d_k)    gamma_h = 1 - 2^(-5-h) fixed (``ops.retention``)
    y = W_O (swish(x W_G) * GroupNorm_h(o))

The paper's extra normalisations of the parallel form (decay rows divided by sqrt of their sum, scores divided by
max(|sum|, 1)) rescale each head's output per token, which the per-head GroupNorm undoes; they are omitted.
Training / prefill uses the chunkwise form (the paper's chunkwise recurrent representation); decoding carries
S (H x d_k x d_v) and the position (for the rotation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.retention import chunk_retention, naive_retention, retention_step, retnet_log_decays
from ..ops.precision import promote, upcast
from ..ops.rope import apply_rope
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._recurrent_layer import LinearRecurrentMixer, linear


@register_mixer("retnet", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Retentive Network: A Successor to Transformer for Large Language Models", "2307.08621", 2023),
    claimed_time="O(n)", claimed_memory="O(n)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality=None,
    claim_source="RetNet paper (arXiv:2307.08621): O(N) chunkwise training, O(1) per-token inference; the guide lists "
                 "RetNet only in guide 003's family tree, not in the Master Comparison Table",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"chunk_size": 32, "expand_v": 2, "rope_theta": 10000.0, "norm_eps": 1e-5},
    test_hparams={"chunk_size": 16},
    notes="impl fla: fla.ops.retention.chunk_retention (CUDA; same fixed decays); decoding always uses our step form",
))
class RetNet(LinearRecurrentMixer):
    chunk_op, naive_op, step_op = chunk_retention, naive_retention, retention_step

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 32, expand_v: int = 2, rope_theta: float = 10000.0, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if expand_v < 1:
            raise ValueError(f"expand_v must be >= 1, got {expand_v}")
        self.chunk_size, self.expand_v, self.rope_theta, self.norm_eps = chunk_size, expand_v, rope_theta, norm_eps
        self.key_dim, self.value_dim = self.head_dim, expand_v * self.head_dim
        value_total = n_heads * self.value_dim
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, value_total, bias=False)
        self.wg = nn.Linear(d_model, value_total, bias=False)  # swish gate
        self.wo = nn.Linear(value_total, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(value_total))  # GroupNorm's affine, per channel
        self.norm_bias = nn.Parameter(torch.zeros(value_total))

    def _features(self, x, conv_cache, start, fp32=False):
        B, T, _ = x.shape
        H = self.n_heads
        q = linear(x, self.wq, fp32).view(B, T, H, self.key_dim)  # (B, T, H, Dk)
        k = linear(x, self.wk, fp32).view(B, T, H, self.key_dim)
        v = linear(x, self.wv, fp32).view(B, T, H, self.value_dim)  # (B, T, H, Dv)
        positions = torch.arange(start, start + T, device=x.device)
        q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)
        return {"q": q, "k": k, "v": v, "log_decay": retnet_log_decays(H, x.device, promote(x))}, x, None

    def _output(self, o, x, fp32=False):
        B, T = o.shape[:2]
        of = upcast(o)  # GroupNorm with one group per head: each head's channels, in at least fp32
        of = (of - of.mean(-1, keepdim=True)) * torch.rsqrt(of.var(-1, unbiased=False, keepdim=True) + self.norm_eps)
        of = of.reshape(B, T, -1) * self.norm_weight.to(of.dtype) + self.norm_bias.to(of.dtype)  # (B, T, H * Dv)
        o = of if fp32 else of.to(o.dtype)
        return linear(F.silu(linear(x, self.wg, fp32)) * o, self.wo, fp32)

    def _fla_chunk(self, inputs):
        from fla.ops.retention import chunk_retention as fla_chunk_retention

        # fla fixes the decays to 1 - 2^(-5-h) inside the kernel, the same as retnet_log_decays
        return fla_chunk_retention(inputs["q"], inputs["k"], inputs["v"], initial_state=inputs.get("initial_state"),
                                   output_final_state=True)
