"""PaLM (Chowdhery et al. 2022, arXiv:2204.02311), section 2: parallel blocks y = x + MLP(LN(x)) + Attention(LN(x)),
multi-query attention (one shared KV head, query heads of 256), SwiGLU with d_ff = 4 d_model, RoPE, no biases in
any dense kernel or layer norm, the input and output embeddings shared. PaLM-540B: Table 1 (118 layers, d_model
18432, 48 heads of 256, vocabulary 256k = 256000 SentencePiece tokens)."""
from __future__ import annotations

from ..spec import Paper
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

PALM = Paper("PaLM: Scaling Language Modeling with Pathways", "2204.02311", 2022)


def palm_config(vocab: int, d: int, layers: int, heads: int, d_head: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=4 * d,
                         mixers=("gqa",), mixer_hparams={"gqa": {"n_kv_heads": 1, "rope_theta": 1e4,
                                                                 "d_head": d_head}},
                         ffn="swiglu", norm="layer", norm_bias=False, norm_eps=1e-5, parallel_block=True,
                         max_seq_len=2048, tie_embeddings=True)


@register_model("palm-540b")
def palm_540b() -> ModelPreset:
    return ModelPreset(
        family="PaLM", paper=PALM, kind="decoder", stack=CausalLM,
        full=palm_config(256000, 18432, 118, 48, 256),
        tiny=palm_config(256, 64, 2, 4, 32),  # heads of 32 at d_model 64: d_head != d_model / n_heads, as 540B
        published={"params": 540.35e9},  # Table 1: 540.35B
        notes="not in transformers: no Hugging Face parity test",
    )
