"""Kimi Delta Attention (Kimi Team 2025, "Kimi Linear: An Expressive, Efficient Attention Architecture",
arXiv:2510.26692), the KDA layer of its paper (fla's KimiDeltaAttention, value dim = key dim = d / H):

    q, k, v = SiLU(ShortConv(x W_q|k|v)); q, k L2-normalised per head; beta_t = sigmoid(x W_beta)
    log alpha_t = -exp(A_log_h) * softplus(x W_f1 W_f2 + dt_bias)   a channel-wise decay (low-rank projection)
    S_t = (I - beta_t k_t k_t^T) diag(alpha_t) S_(t-1) + beta_t k_t v_t^T,  o_t = S_t^T q_t / sqrt(d_k)
                                                                    (``ops.kda``)
    y = W_o (RMSNorm_head(o) * sigmoid(x W_g1 W_g2 + b_g))          low-rank sigmoid output gate

Training / prefill uses the chunkwise WY form whose in-chunk products carry per-channel decays; decoding carries S
and the convolution's last 3 inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.kda import chunk_kda, kda_step, naive_kda
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._recurrent_layer import DeltaRuleMixer, head_rms_norm, linear
from .gated_deltanet import init_dt_bias


@register_mixer("kda", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Kimi Linear: An Expressive, Efficient Attention Architecture", "2510.26692", 2025),
    claimed_time="O(nd^2)", claimed_memory="O(nd)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="101%+",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"chunk_size": 32, "conv_size": 4, "norm_eps": 1e-5, "d_head": None, "gate_bias": True},
    test_hparams={"chunk_size": 16},
    notes="the guide's quality claim is for the Kimi Linear hybrid (KDA + MLA); this is the KDA layer alone. "
          "impl fla: fla.ops.kda.chunk_kda (CUDA); decoding always uses our step form",
))
class KimiDeltaAttention(DeltaRuleMixer):
    chunk_op, naive_op, step_op = chunk_kda, naive_kda, kda_step

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 32, conv_size: int = 4, norm_eps: float = 1e-5, d_head: int | None = None,
                 gate_bias: bool = True):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.chunk_size, self.conv_size, self.norm_eps = chunk_size, conv_size, norm_eps
        # d_head None: d_model / n_heads; Kimi Linear 48B sets 128 (32 heads of 128 at d_model 2304).
        # gate_bias: fla's output gate has a bias, the Hugging Face Kimi Linear port has none.
        self.gate_bias, self.d_head = gate_bias, d_head
        if d_head is not None:
            if d_head < 1:
                raise ValueError(f"d_head must be >= 1, got {d_head}")
            self.head_dim = d_head
        self.inner = inner = n_heads * self.head_dim
        self._init_qkv(d_model, conv_size)
        rank = self.head_dim  # the low rank of the gate projections (fla: head_v_dim)
        self.wf1 = nn.Linear(d_model, rank, bias=False)  # channel-wise decay input, low rank
        self.wf2 = nn.Linear(rank, inner, bias=False)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(init_dt_bias(inner))
        self.wg1 = nn.Linear(d_model, rank, bias=False)  # output gate, low rank
        self.wg2 = nn.Linear(rank, inner, bias=gate_bias)
        self.wo = nn.Linear(inner, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))

    def _features(self, x, conv_cache, start, fp32=False):
        B, T, _ = x.shape
        q, k, v, beta, conv_cache = self._qkv_beta(x, conv_cache, fp32)
        f = linear(linear(x, self.wf1, fp32), self.wf2, fp32).float() + self.dt_bias.float()  # (B, T, D)
        f = f.view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dk)
        g = -self.A_log.float().exp()[:, None] * F.softplus(f)  # log alpha <= 0 per channel, fp32
        return {"q": q, "k": k, "v": v, "g": g, "beta": beta}, x, conv_cache

    def _output(self, o, x, fp32=False):
        B, T = o.shape[:2]
        o = head_rms_norm(o, self.norm_weight.float() if fp32 else self.norm_weight, self.norm_eps)
        gate = torch.sigmoid(linear(linear(x, self.wg1, fp32), self.wg2, fp32))
        return linear(o.reshape(B, T, self.inner) * gate, self.wo, fp32)  # (B, T, H, Dh) -> (B, T, H*Dh)

    def _fla_chunk(self, inputs):
        from fla.ops.kda import chunk_kda as fla_chunk_kda

        return fla_chunk_kda(**inputs, output_final_state=True)
