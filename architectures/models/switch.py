"""Switch Transformer, Switch-Base-8 (Fedus et al. 2021): T5-base in which every other FFN (layers 1, 3, 5, ...
of the encoder and of the decoder) is a top-1 mixture of 8 experts with a capacity factor (``switch_moe.SwitchFFN``).

Parameter convention: as Hugging Face's ``SwitchTransformersForConditionalGeneration`` (google/switch-base-8).
Active parameters per token: all dense parameters plus one expert per MoE layer. Published: 619M (the
google/switch-base-8 model card; the paper's Table 9 lists the 128-expert Switch-Base only).
"""
from __future__ import annotations

import dataclasses

from ..spec import Paper
from .enc_dec import EncoderDecoder
from .encoder import EncoderConfig
from .registry import ModelPreset, register_model
from .t5 import T5_BASE, T5_TINY

SWITCH_BASE_8 = dataclasses.replace(T5_BASE, ffn_pattern=("dense", "moe"), n_experts=8, capacity_factor=1.0,
                                    router_jitter=0.01)
SWITCH_TINY = dataclasses.replace(T5_TINY, ffn_pattern=("dense", "moe"), n_experts=4, capacity_factor=2.0,
                                  router_jitter=0.0)


def switch_hf_config(cfg: EncoderConfig):
    from transformers import SwitchTransformersConfig

    n_moe_enc = sum(cfg.ffn_pattern[i % len(cfg.ffn_pattern)] == "moe" for i in range(cfg.n_layers))
    n_moe_dec = sum(cfg.ffn_pattern[i % len(cfg.ffn_pattern)] == "moe" for i in range(cfg.n_decoder_layers))
    return SwitchTransformersConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff, num_layers=cfg.n_layers,
        num_decoder_layers=cfg.n_decoder_layers, num_heads=cfg.n_heads, num_experts=cfg.n_experts,
        num_sparse_encoder_layers=n_moe_enc, num_sparse_decoder_layers=n_moe_dec,
        relative_attention_num_buckets=cfg.relative_buckets, relative_attention_max_distance=cfg.relative_max_distance,
        layer_norm_epsilon=cfg.norm_eps, dense_act_fn=cfg.activation, dropout_rate=0.0,
        router_jitter_noise=cfg.router_jitter,
        tie_word_embeddings=cfg.tie_embeddings)


@register_model("switch-base-8")
def switch_base_8() -> ModelPreset:
    return ModelPreset(
        family="Switch Transformer",
        paper=Paper("Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient Sparsity",
                    "2101.03961", 2021),
        kind="encoder-decoder", stack=EncoderDecoder, full=SWITCH_BASE_8, tiny=SWITCH_TINY,
        published={"params": 619e6},  # google/switch-base-8 model card
        hf_config=switch_hf_config,
        notes="T5-base with a top-1 MoE of 8 experts in every other FFN; capacity factor 1.0")
