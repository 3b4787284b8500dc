"""Mixtral 8x7B (Jiang et al. 2024, arXiv:2401.04088): Mistral's block with every FFN replaced by 8 SwiGLU experts,
top-2 softmax routing (weights renormalised over the two), grouped-query attention (no sliding window in the
released model). Full-size values: HF mistralai/Mixtral-8x7B-v0.1 config.json."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

MIXTRAL = Paper("Mixtral of Experts", "2401.04088", 2024)


def mixtral_config(vocab: int, d: int, layers: int, heads: int, kv_heads: int, d_expert: int, experts: int,
                   top_k: int, theta: float, max_seq_len: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_expert,
                         mixers=("gqa",), mixer_hparams={"gqa": {"n_kv_heads": kv_heads, "rope_theta": theta}},
                         ffns=("moe",), n_experts=experts, top_k=top_k, d_expert=d_expert,
                         router_score="softmax", router_norm_topk=True,
                         ffn="swiglu", norm="rms", norm_eps=1e-5, max_seq_len=max_seq_len)


@register_model("mixtral-8x7b")
def mixtral_8x7b() -> ModelPreset:
    return ModelPreset(
        family="Mixtral", paper=MIXTRAL, kind="decoder", stack=CausalLM,
        # vocab 32000, hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, 8 local experts, 2 per
        # token, rope_theta 1e6, rms_norm_eps 1e-5, 32768 positions, untied
        full=mixtral_config(32000, 4096, 32, 32, 8, 14336, 8, 2, 1e6, 32768),
        tiny=mixtral_config(256, 64, 2, 4, 2, 96, 4, 2, 1e6, 512),
        # the paper, section 2.1: "47B parameters" total, "13B active parameters"; Mistral's release: 46.7B / 12.9B
        published={"params": 46.7e9, "active_params": 12.9e9},
        hf_config=hf.mixtral_config,
    )
