"""DeltaNet (Yang, Wang, Zhang, Shen, Kim 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence
Length", arXiv:2406.06484), the layer of its paper (fla's DeltaNet defaults):

    q, k, v = SiLU(ShortConv(x W_q|k|v))      depthwise causal convolution, kernel 4
    q, k <- q / ||q||, k / ||k|| per head     (L2 norm: the transition I - beta k k^T is then a contraction)
    beta_t = sigmoid(x W_beta) per head
    S_t = (I - beta_t k_t k_t^T) S_(t-1) + beta_t k_t v_t^T,  o_t = S_t^T q_t / sqrt(d_k)     (``ops.delta_rule``)
    y = W_o RMSNorm_head(o)

Training / prefill uses the chunkwise WY form; decoding carries S (H x d_k x d_v) and the convolution's last 3 inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.delta_rule import chunk_delta_rule, delta_rule_step, naive_delta_rule
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from ._recurrent_layer import DeltaRuleMixer, head_rms_norm, linear


@register_mixer("deltanet", spec=MixerSpec(
    family="linear attention",
    paper=Paper("Parallelizing Linear Transformers with the Delta Rule over Sequence Length", "2406.06484", 2024),
    claimed_time="O(nd^2)", claimed_memory="O(nd)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="~99%",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"chunk_size": 32, "conv_size": 4, "norm_eps": 1e-5},
    test_hparams={"chunk_size": 16},
    notes="impl fla: fla.ops.delta_rule.chunk_delta_rule (CUDA); decoding always uses our step form",
))
class DeltaNet(DeltaRuleMixer):
    chunk_op, naive_op, step_op = chunk_delta_rule, naive_delta_rule, delta_rule_step

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 chunk_size: int = 32, conv_size: int = 4, norm_eps: float = 1e-5):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.chunk_size, self.conv_size, self.norm_eps = chunk_size, conv_size, norm_eps
        self._init_qkv(d_model, conv_size)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))

    def _features(self, x, conv_cache, start, fp32=False):
        q, k, v, beta, conv_cache = self._qkv_beta(x, conv_cache, fp32)
        return {"q": q, "k": k, "v": v, "beta": beta}, None, conv_cache

    def _output(self, o, aux, fp32=False):
        B, T = o.shape[:2]
        o = head_rms_norm(o, self.norm_weight.float() if fp32 else self.norm_weight, self.norm_eps)
        return linear(o.reshape(B, T, self.d_model), self.wo, fp32)  # (B, T, H, Dh) -> (B, T, D)

    def _fla_chunk(self, inputs):
        from fla.ops.delta_rule import chunk_delta_rule as fla_chunk_delta_rule

        return fla_chunk_delta_rule(**inputs, output_final_state=True)
