"""DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437): multi-head latent attention (``mla``: 128 heads, KV compressed
to a 512-dim latent plus a 64-dim shared RoPE key, queries through a 1536-dim latent), the first 3 layers dense
(SwiGLU 18432), the other 58 DeepSeekMoE layers: 256 fine-grained routed experts (SwiGLU 2048) with sigmoid scores,
top-8 within the best 4 of 8 groups, weights renormalised and scaled by 2.5, plus 1 shared expert. Full-size values:
HF deepseek-ai/DeepSeek-V3 config.json. The multi-token-prediction module (num_nextn_predict_layers 1, 14B more
parameters in the released checkpoint's 685B) is not part of the model proper and is not built, as in Hugging
Face's DeepseekV3ForCausalLM; the paper's 671B excludes it too. YaRN RoPE scaling changes no parameter and is left
out (the tiny flavour is compared with Hugging Face without it)."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

DEEPSEEK_V3 = Paper("DeepSeek-V3 Technical Report", "2412.19437", 2024)


def deepseek_v3_config(vocab: int, d: int, layers: int, heads: int, dense: int, mla: dict, d_ff: int, d_expert: int,
                       experts: int, top_k: int, shared: int, groups: int, topk_groups: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=("mla",), mixer_hparams={"mla": mla},
                         ffns=("moe",), first_ffns=("dense",) * dense, n_experts=experts, top_k=top_k,
                         n_shared=shared, d_expert=d_expert, router_score="sigmoid", router_norm_topk=True,
                         routed_scale=2.5, router_groups=groups, router_topk_groups=topk_groups, router_bias=True,
                         ffn="swiglu", norm="rms", norm_eps=1e-6, max_seq_len=163840)


@register_model("deepseek-v3")
def deepseek_v3() -> ModelPreset:
    full_mla = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                "v_head_dim": 128, "rope_theta": 1e4}
    tiny_mla = {"q_lora_rank": 48, "kv_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16,
                "v_head_dim": 16, "rope_theta": 1e4}
    return ModelPreset(
        family="DeepSeek", paper=DEEPSEEK_V3, kind="decoder", stack=CausalLM,
        # vocab 129280, hidden 7168, 61 layers, 128 heads, first_k_dense_replace 3, intermediate 18432,
        # moe_intermediate 2048, n_routed_experts 256, num_experts_per_tok 8, n_shared_experts 1, n_group 8,
        # topk_group 4, routed_scaling_factor 2.5, rms_norm_eps 1e-6, untied
        full=deepseek_v3_config(129280, 7168, 61, 128, 3, full_mla, 18432, 2048, 256, 8, 1, 8, 4),
        tiny=deepseek_v3_config(256, 64, 3, 4, 1, tiny_mla, 128, 32, 8, 2, 1, 4, 2),
        published={"params": 671e9, "active_params": 37e9},  # abstract: "671B total, 37B activated for each token"
        hf_config=hf.deepseek_v3_config,
    )
