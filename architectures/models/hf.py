"""Hugging Face ``transformers`` interop (the ``oracles`` extra; transformers is imported lazily, inside functions).

- ``<family>_config(cfg)``: our ``DecoderConfig`` -> the ``transformers`` config of the same model (presets'
  ``hf_config``), so that ``AutoModelForCausalLM.from_config`` builds Hugging Face's implementation of it;
- ``from_hf_config(config | path to config.json)``: the reverse, a ``DecoderConfig`` from a transformers config;
- ``transplant(ours, theirs)``: copy Hugging Face's weights into our module, by the mapping below, for the logits
  equality tests.
"""
from __future__ import annotations

from typing import Any

from .decoder import DecoderConfig


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": float(theta)}


def _gqa(cfg: DecoderConfig, name: str = "gqa") -> dict[str, Any]:
    return dict(cfg.mixer_hparams.get(name, {}))


def llama_config(cfg: DecoderConfig):
    from transformers import LlamaConfig

    attn = _gqa(cfg)
    return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=attn.get("n_kv_heads", cfg.n_heads), rms_norm_eps=cfg.norm_eps,
                       rope_parameters=_rope(attn.get("rope_theta", 1e4)), max_position_embeddings=cfg.max_seq_len,
                       tie_word_embeddings=cfg.tie_embeddings)


def gpt2_config(cfg: DecoderConfig):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                      n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function="gelu_new",
                      layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def mistral_config(cfg: DecoderConfig):
    from transformers import MistralConfig

    attn = _gqa(cfg, "sliding_window")
    return MistralConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=attn.get("n_kv_heads") or cfg.n_heads, rms_norm_eps=cfg.norm_eps,
                         rope_parameters=_rope(attn.get("rope_theta", 1e4)), sliding_window=attn["window"],
                         max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=cfg.tie_embeddings)


def mixtral_config(cfg: DecoderConfig):
    from transformers import MixtralConfig

    attn = _gqa(cfg)
    return MixtralConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_expert,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=attn.get("n_kv_heads", cfg.n_heads), rms_norm_eps=cfg.norm_eps,
                         rope_parameters=_rope(attn.get("rope_theta", 1e4)), num_local_experts=cfg.n_experts,
                         num_experts_per_tok=cfg.top_k, max_position_embeddings=cfg.max_seq_len,
                         tie_word_embeddings=cfg.tie_embeddings, sliding_window=None)


def deepseek_v3_config(cfg: DecoderConfig):
    from transformers import DeepseekV3Config

    mla = _gqa(cfg, "mla")
    return DeepseekV3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        moe_intermediate_size=cfg.d_expert, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_shared_experts=cfg.n_shared, n_routed_experts=cfg.n_experts,
        routed_scaling_factor=cfg.routed_scale, kv_lora_rank=mla["kv_lora_rank"], q_lora_rank=mla["q_lora_rank"],
        qk_rope_head_dim=mla["qk_rope_head_dim"], v_head_dim=mla["v_head_dim"],
        qk_nope_head_dim=mla["qk_nope_head_dim"], n_group=cfg.router_groups, topk_group=cfg.router_topk_groups,
        num_experts_per_tok=cfg.top_k, first_k_dense_replace=len(cfg.first_ffns), norm_topk_prob=cfg.router_norm_topk,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters=_rope(mla.get("rope_theta", 1e4)), rope_interleave=False,  # our RoPE rotates half-split pairs
        max_position_embeddings=cfg.max_seq_len)


def jamba_config(cfg: DecoderConfig):
    from transformers import JambaConfig

    mamba, attn = _gqa(cfg, "mamba"), _gqa(cfg)
    period = len(cfg.mixers)
    return JambaConfig(
        vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_embeddings, hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=attn["n_kv_heads"], rms_norm_eps=cfg.norm_eps, num_experts_per_tok=cfg.top_k,
        num_experts=cfg.n_experts, expert_layer_period=len(cfg.ffns), expert_layer_offset=cfg.ffns.index("moe"),
        attn_layer_period=period, attn_layer_offset=cfg.mixers.index("gqa"), use_mamba_kernels=False,
        mamba_d_state=mamba["d_state"], mamba_d_conv=mamba["d_conv"], mamba_expand=mamba["expand"],
        mamba_dt_rank=mamba["dt_rank"], mamba_conv_bias=True, mamba_proj_bias=False,
        max_position_embeddings=cfg.max_seq_len)


def mamba_config(cfg: DecoderConfig):
    from transformers import MambaConfig

    m = _gqa(cfg, "mamba")
    return MambaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, state_size=m.get("d_state", 16),
                       num_hidden_layers=cfg.n_layers, layer_norm_epsilon=cfg.norm_eps, expand=m.get("expand", 2),
                       conv_kernel=m.get("d_conv", 4), use_bias=False, use_conv_bias=True,
                       time_step_rank=m.get("dt_rank") or "auto", tie_word_embeddings=cfg.tie_embeddings)


def kimi_linear_config(cfg: DecoderConfig):
    from transformers import KimiLinearConfig

    mla, kda = _gqa(cfg, "mla"), _gqa(cfg, "kda")
    layers = cfg.layer_mixers()
    return KimiLinearConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        moe_intermediate_size=cfg.d_expert, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_shared_experts=cfg.n_shared, routed_scaling_factor=cfg.routed_scale,
        kv_lora_rank=mla["kv_lora_rank"], q_lora_rank=mla["q_lora_rank"], qk_rope_head_dim=mla["qk_rope_head_dim"],
        v_head_dim=mla["v_head_dim"], qk_nope_head_dim=mla["qk_nope_head_dim"], num_experts_per_tok=cfg.top_k,
        num_local_experts=cfg.n_experts, norm_topk_prob=cfg.router_norm_topk, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        layer_types=["full_attention" if m == "mla" else "linear_attention" for m in layers],
        mlp_layer_types=["sparse" if f == "moe" else "dense" for f in cfg.layer_ffns()],
        linear_head_dim=kda["d_head"], linear_num_heads=cfg.n_heads, linear_conv_kernel_dim=kda.get("conv_size", 4))
