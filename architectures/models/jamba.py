"""Jamba (Lieber et al. 2024, arXiv:2403.19887): a Mamba / attention hybrid, one attention layer per 8 (7:1, the
attention at offset 4 of each block of 8), an MoE FFN every other layer (offset 1; 16 experts, top-2 softmax
routing, weights not renormalised), Mamba layers with RMSNorms on dt, B and C, attention without any positional
encoding (grouped-query, 8 KV heads). Full-size values: HF ai21labs/Jamba-v0.1 config.json."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

JAMBA = Paper("Jamba: A Hybrid Transformer-Mamba Language Model", "2403.19887", 2024)

JAMBA_MIXERS = ("mamba",) * 4 + ("gqa",) + ("mamba",) * 3  # attn_layer_period 8, attn_layer_offset 4
JAMBA_FFNS = ("dense", "moe")  # expert_layer_period 2, expert_layer_offset 1


def jamba_config(vocab: int, d: int, layers: int, heads: int, kv_heads: int, d_ff: int, experts: int, top_k: int,
                 mamba: dict) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=JAMBA_MIXERS,
                         mixer_hparams={"gqa": {"n_kv_heads": kv_heads, "rope_theta": None}, "mamba": mamba},
                         ffns=JAMBA_FFNS, n_experts=experts, top_k=top_k, d_expert=d_ff,
                         router_score="softmax", router_norm_topk=False,
                         ffn="swiglu", norm="rms", norm_eps=1e-6, max_seq_len=262144)


@register_model("jamba-v0.1")
def jamba_v01() -> ModelPreset:
    return ModelPreset(
        family="Jamba", paper=JAMBA, kind="decoder", stack=CausalLM,
        # vocab 65536, hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, 16 experts, 2 per token,
        # mamba_d_state 16, mamba_d_conv 4, mamba_expand 2, mamba_dt_rank 256, rms_norm_eps 1e-6, untied
        full=jamba_config(65536, 4096, 32, 32, 8, 14336, 16, 2,
                          {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 256, "inner_norm_eps": 1e-6}),
        tiny=jamba_config(256, 64, 8, 4, 2, 96, 4, 2,
                          {"d_state": 8, "d_conv": 4, "expand": 2, "dt_rank": 8, "inner_norm_eps": 1e-6,
                           "chunk_size": 16}),
        published={"params": 52e9, "active_params": 12e9},  # the paper, Table 1: 52B total, 12B active
        hf_config=hf.jamba_config,
    )
