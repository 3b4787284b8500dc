"""Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
arXiv:2412.06464), the layer of its paper (fla's GatedDeltaNet, with value dim = key dim = d / H):

    q, k, v = SiLU(ShortConv(x W_q|k|v)); q, k L2-normalised per head; beta_t = sigmoid(x W_beta)
    log alpha_t = -exp(A_log) * softplus(x W_a + dt_bias)   a scalar decay per head (Mamba-2's parametrisation)
    S_t = alpha_t (I - beta_t k_t k_t^T) S_(t-1) + beta_t k_t v_t^T,  o_t = S_t^T q_t / sqrt(d_k)
                                                            (``ops.gated_delta_rule``)
    y = W_o (RMSNorm_head(o) * swish(x W_g))

Training / prefill uses the chunkwise WY form with log-space decays; decoding carries S and the convolution's last
3 inputs. fla's layer defaults to a value expansion of 2; here the value head equals the key head so that every
mixer of the comparison spends the same width.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gated_delta_rule import chunk_gated_delta_rule, gated_delta_rule_step, naive_gated_delta_rule
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ..ops.precision import upcast
from ._recurrent_layer import DeltaRuleMixer, head_rms_norm, linear


def init_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Mamba-2's initialisation: dt log-uniform in [dt_min, dt_max], stored as softplus^-1(dt)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


@register_mixer("gated_deltanet", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Gated Delta Networks: Improving Mamba2 with Delta Rule", "2412.06464", 2024),
    claimed_time="O(nd^2)", claimed_memory="O(nd)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality=None,
    claim_source="Gated DeltaNet paper (arXiv:2412.06464): chunkwise training linear in n, constant-size recurrent "
                 "state for decoding; Gated DeltaNet is not in the Master Comparison Table",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"chunk_size": 32, "conv_size": 4, "norm_eps": 1e-5},
    test_hparams={"chunk_size": 16},
    notes="impl fla: fla.ops.gated_delta_rule.chunk_gated_delta_rule (CUDA); decoding always uses our step form",
))
class GatedDeltaNet(DeltaRuleMixer):
    chunk_op, naive_op, step_op = chunk_gated_delta_rule, naive_gated_delta_rule, gated_delta_rule_step

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 32, conv_size: int = 4, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.chunk_size, self.conv_size, self.norm_eps = chunk_size, conv_size, norm_eps
        self._init_qkv(d_model, conv_size)
        self.wa = nn.Linear(d_model, n_heads, bias=False)  # decay input, per head
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(0, 16).log())
        self.dt_bias = nn.Parameter(init_dt_bias(n_heads))
        self.wg = nn.Linear(d_model, d_model, bias=False)  # output gate
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))

    def _features(self, x, conv_cache, start, fp32=False):
        q, k, v, beta, conv_cache = self._qkv_beta(x, conv_cache, fp32)
        a = upcast(linear(x, self.wa, fp32))  # (B, T, H), in at least fp32
        g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))  # log alpha <= 0
        return {"q": q, "k": k, "v": v, "g": g, "beta": beta}, x, conv_cache

    def _output(self, o, x, fp32=False):
        B, T = o.shape[:2]
        o = head_rms_norm(o, self.norm_weight.float() if fp32 else self.norm_weight, self.norm_eps)
        o = o.reshape(B, T, self.d_model) * F.silu(linear(x, self.wg, fp32))  # (B, T, H, Dh) -> (B, T, D)
        return linear(o, self.wo, fp32)

    def _fla_chunk(self, inputs):
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk_gated_delta_rule

        return fla_chunk_gated_delta_rule(**inputs, output_final_state=True)
