"""Mistral 7B (Jiang et al. 2023, arXiv:2310.06825): LLaMA's block with grouped-query attention (8 KV heads) inside
a sliding window of 4096 tokens (each token attends to itself and the 4095 before it, Hugging Face's convention), so
the KV cache stops growing at the window. Full-size values: HF mistralai/Mistral-7B-v0.1 config.json."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

MISTRAL = Paper("Mistral 7B", "2310.06825", 2023)


def mistral_config(vocab: int, d: int, layers: int, heads: int, kv_heads: int, d_ff: int, window: int,
                   max_seq_len: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=("sliding_window",),
                         mixer_hparams={"sliding_window": {"window": window, "n_kv_heads": kv_heads,
                                                           "rope_theta": 1e4}},
                         ffn="swiglu", norm="rms", norm_eps=1e-5, max_seq_len=max_seq_len)


@register_model("mistral-7b")
def mistral_7b() -> ModelPreset:
    return ModelPreset(
        family="Mistral", paper=MISTRAL, kind="decoder", stack=CausalLM,
        # vocab 32000, hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, sliding_window 4096,
        # rope_theta 1e4, rms_norm_eps 1e-5, max_position_embeddings 32768, untied
        full=mistral_config(32000, 4096, 32, 32, 8, 14336, 4096, 32768),
        tiny=mistral_config(256, 128, 2, 4, 2, 344, 8, 512),
        published={"params": 7.24e9},  # HF model card: 7.24B
        hf_config=hf.mistral_config,
    )
