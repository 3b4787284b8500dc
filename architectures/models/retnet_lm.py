"""RetNet language model (Sun et al. 2023, arXiv:2307.08621): pre-norm blocks of multi-scale retention (the
``retnet`` mixer: value and gate width 2 d_model, heads of 256 channels in the paper's models) and a GELU FFN of
width 2 d_model, so a block has 12 d_model^2 parameters like a Transformer's. RetNet-6.7B: Table 4 (d_model 4096,
32 layers, 16 heads, FFN 8192). The paper does not state the vocabulary; the preset uses 50257 (GPT-2's BPE),
untied, and says so: the 6.7B label is about the blocks (12 * 4096^2 * 32 = 6.44B) plus embeddings."""
from __future__ import annotations

from ..spec import Paper
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

RETNET = Paper("Retentive Network: A Successor to Transformer for Large Language Models", "2307.08621", 2023)


def retnet_config(vocab: int, d: int, layers: int, heads: int, tie: bool, chunk: int = 32) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=2 * d,
                         mixers=("retnet",), mixer_hparams={"retnet": {"expand_v": 2, "chunk_size": chunk}},
                         ffn="gelu",
                         norm="layer", norm_eps=1e-6, max_seq_len=2048, tie_embeddings=tie)


@register_model("retnet-6.7b")
def retnet_6_7b() -> ModelPreset:
    return ModelPreset(
        family="RetNet", paper=RETNET, kind="decoder", stack=CausalLM,
        full=retnet_config(50257, 4096, 32, 16, False),
        tiny=retnet_config(256, 64, 2, 2, False, chunk=16),
        published={"params": 6.7e9},  # Table 4's size label "6.7B"
        notes="vocabulary not published (50257 assumed); not in transformers",
    )
