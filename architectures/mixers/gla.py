"""Gated Linear Attention (Yang, Wang, Shen, Panda, Kim 2023, arXiv:2312.06635), the layer of its paper:

    q = x W_q, k = x W_k (key dim expand_k * d = d/2), v = x W_v
    log alpha_t = logsigmoid(x W_a1 W_a2 + b_a) / 16      low-rank (16) data-dependent forget gate per key channel
    S_t = diag(alpha_t) S_(t-1) + k_t v_t^T,  o_t = S_t^T q_t / sqrt(d_k)        (``ops.gla``)
    y = W_o (RMSNorm_head(o) * swish(x W_r))              per-head norm (RMSNorm, as fla), swish output gate

The temperature 16 (``gate_logit_normalizer``) keeps alpha close to 1, as in the paper. Training / prefill uses the
chunkwise form (recursive halving for the channel-wise gates); decoding carries S (H x d_k x d_v) per sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gla import chunk_gla, gla_step, naive_gla
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ..ops.precision import upcast
from ._recurrent_layer import LinearRecurrentMixer, head_rms_norm, linear


@register_mixer("gla", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Gated Linear Attention Transformers with Hardware-Efficient Training", "2312.06635", 2023),
    claimed_time="O(nd^2)", claimed_memory="O(nd)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="~98%",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"chunk_size": 32, "expand_k": 0.5, "gate_low_rank_dim": 16, "gate_logit_normalizer": 16,
                     "norm_eps": 1e-5},
    test_hparams={"chunk_size": 16},
    notes="impl fla: fla.ops.gla.chunk_gla (CUDA); decoding always uses our step form",
))
class GatedLinearAttention(LinearRecurrentMixer):
    chunk_op, naive_op, step_op = chunk_gla, naive_gla, gla_step

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 32, expand_k: float = 0.5, gate_low_rank_dim: int = 16,
                 gate_logit_normalizer: int = 16, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        key_total = int(d_model * expand_k)
        if key_total != d_model * expand_k or key_total % n_heads or key_total == 0:
            raise ValueError(f"d_model * expand_k = {d_model * expand_k} must be a positive multiple of n_heads")
        self.chunk_size, self.expand_k, self.gate_low_rank_dim = chunk_size, expand_k, gate_low_rank_dim
        self.gate_logit_normalizer, self.norm_eps = gate_logit_normalizer, norm_eps
        self.key_dim, self.value_dim = key_total // n_heads, self.head_dim
        self.wq = nn.Linear(d_model, key_total, bias=False)
        self.wk = nn.Linear(d_model, key_total, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wa1 = nn.Linear(d_model, gate_low_rank_dim, bias=False)  # forget gate, low rank
        self.wa2 = nn.Linear(gate_low_rank_dim, key_total, bias=True)
        self.wr = nn.Linear(d_model, d_model, bias=False)  # output gate
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))

    def _features(self, x, conv_cache, start, fp32=False):
        B, T, _ = x.shape
        H = self.n_heads
        q = linear(x, self.wq, fp32).view(B, T, H, self.key_dim)  # (B, T, H, Dk)
        k = linear(x, self.wk, fp32).view(B, T, H, self.key_dim)
        v = linear(x, self.wv, fp32).view(B, T, H, self.value_dim)  # (B, T, H, Dv)
        gate = linear(linear(x, self.wa1, fp32), self.wa2, fp32).view(B, T, H, self.key_dim)
        g = F.logsigmoid(upcast(gate)) / self.gate_logit_normalizer  # log alpha, in at least fp32
        return {"q": q, "k": k, "v": v, "g": g}, x, None

    def _output(self, o, x, fp32=False):
        B, T = o.shape[:2]
        o = head_rms_norm(o, self.norm_weight.float() if fp32 else self.norm_weight, self.norm_eps)
        o = o.reshape(B, T, self.d_model) * F.silu(linear(x, self.wr, fp32))  # (B, T, H, Dv) -> (B, T, D)
        return linear(o, self.wo, fp32)

    def _fla_chunk(self, inputs):
        from fla.ops.gla import chunk_gla as fla_chunk_gla

        return fla_chunk_gla(**inputs, output_final_state=True)
