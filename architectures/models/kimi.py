"""Kimi Linear 48B-A3B (Kimi Team 2025, arXiv:2510.26692): a 3:1 hybrid of Kimi Delta Attention (``kda``, 32 heads
of 128) and multi-head latent attention (``mla``, 32 heads, KV latent 512, no positional encoding: NoPE), with
DeepSeek-V3-style MoE FFNs (256 experts of 1024, top-8 sigmoid routing, weights renormalised and scaled by 2.446,
1 shared expert) after a first dense layer (9216). The released checkpoint places MLA at the 1-indexed layers 4, 8,
..., 24 and 27 (HF moonshotai/Kimi-Linear-48B-A3B-Instruct config.json, ``linear_attn_config``): 20 KDA + 7 MLA.
The Hugging Face port's KDA output gate has no bias (fla's has one): ``gate_bias=False``."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

KIMI = Paper("Kimi Linear: An Expressive, Efficient Attention Architecture", "2510.26692", 2025)

FULL_ATTN_LAYERS = (4, 8, 12, 16, 20, 24, 27)  # 1-indexed, from the checkpoint's linear_attn_config


def kimi_config(vocab: int, d: int, layers: int, heads: int, kda_head: int, mla: dict, d_ff: int, d_expert: int,
                experts: int, top_k: int, mla_layers: tuple[int, ...], chunk: int = 32,
                eps: float = 1e-5) -> DecoderConfig:
    pattern = tuple("mla" if i + 1 in mla_layers else "kda" for i in range(layers))
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=("kda",), first_mixers=pattern,
                         mixer_hparams={"kda": {"d_head": kda_head, "gate_bias": False, "norm_eps": eps,
                                                "chunk_size": chunk},
                                        "mla": mla},
                         ffns=("moe",), first_ffns=("dense",), n_experts=experts, top_k=top_k, n_shared=1,
                         d_expert=d_expert, router_score="sigmoid", router_norm_topk=True, routed_scale=2.446,
                         router_bias=True, ffn="swiglu", norm="rms", norm_eps=eps, max_seq_len=1048576)


@register_model("kimi-linear-48b-a3b")
def kimi_linear() -> ModelPreset:
    full_mla = {"kv_lora_rank": 512, "q_lora_rank": None, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                "v_head_dim": 128, "rope_theta": None}
    tiny_mla = {"kv_lora_rank": 32, "q_lora_rank": None, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16,
                "v_head_dim": 16, "rope_theta": None}
    return ModelPreset(
        family="Kimi Linear", paper=KIMI, kind="decoder", stack=CausalLM,
        # vocab 163840, hidden 2304, 27 layers, 32 heads, linear head_dim 128, intermediate 9216,
        # moe_intermediate 1024, 256 experts, 8 per token, 1 shared, first_k_dense_replace 1,
        # routed_scaling_factor 2.446, rms_norm_eps 1e-5, untied
        full=kimi_config(163840, 2304, 27, 32, 128, full_mla, 9216, 1024, 256, 8, FULL_ATTN_LAYERS),
        tiny=kimi_config(256, 64, 4, 2, 32, tiny_mla, 128, 32, 8, 2, (4,), chunk=16),
        published={"params": 48e9, "active_params": 3e9},  # the paper: "48B total, 3B activated parameters"
        hf_config=hf.kimi_linear_config,
    )
