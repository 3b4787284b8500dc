"""LLaMA-2 and LLaMA-3 (Touvron et al. 2023, arXiv:2307.09288; Grattafiori et al. 2024, arXiv:2407.21783):
pre-norm RMSNorm, rotary positions, SwiGLU FFN, grouped-query attention (LLaMA-2-7B has 32 KV heads: plain
multi-head attention; LLaMA-3-8B 8), untied head. Full-size values are the Hugging Face config.json of
meta-llama/Llama-2-7b-hf and meta-llama/Meta-Llama-3-8B."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

LLAMA2 = Paper("Llama 2: Open Foundation and Fine-Tuned Chat Models", "2307.09288", 2023)
LLAMA3 = Paper("The Llama 3 Herd of Models", "2407.21783", 2024)


def llama_config(vocab: int, d: int, layers: int, heads: int, kv_heads: int, d_ff: int, theta: float,
                 max_seq_len: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=("gqa",), mixer_hparams={"gqa": {"n_kv_heads": kv_heads, "rope_theta": theta}},
                         ffn="swiglu", norm="rms", norm_eps=1e-5, max_seq_len=max_seq_len)


@register_model("llama2-7b")
def llama2_7b() -> ModelPreset:
    return ModelPreset(
        family="LLaMA", paper=LLAMA2, kind="decoder", stack=CausalLM,
        # HF meta-llama/Llama-2-7b-hf config.json: vocab 32000, hidden 4096, 32 layers, 32 heads, 32 KV heads,
        # intermediate 11008, rms_norm_eps 1e-5, rope_theta 1e4, 4096 positions, untied
        full=llama_config(32000, 4096, 32, 32, 32, 11008, 1e4, 4096),
        tiny=llama_config(256, 128, 2, 4, 4, 344, 1e4, 512),
        published={"params": 6.74e9},  # the paper's Table 1 "7B"; HF model card: 6,738,415,616 (6.74B)
        hf_config=hf.llama_config,
    )


@register_model("llama3-8b")
def llama3_8b() -> ModelPreset:
    return ModelPreset(
        family="LLaMA", paper=LLAMA3, kind="decoder", stack=CausalLM,
        # HF meta-llama/Meta-Llama-3-8B config.json: vocab 128256, hidden 4096, 32 layers, 32 heads, 8 KV heads,
        # intermediate 14336, rms_norm_eps 1e-5, rope_theta 5e5, 8192 positions, untied
        full=llama_config(128256, 4096, 32, 32, 8, 14336, 5e5, 8192),
        tiny=llama_config(256, 128, 2, 4, 2, 344, 5e5, 512),
        published={"params": 8.03e9},  # HF model card of Meta-Llama-3-8B: 8.03B
        hf_config=hf.llama_config,
    )
