"""Mamba language model (Gu & Dao 2023, arXiv:2312.00752): mixer-only blocks x + Mamba(RMSNorm(x)) (no FFN: a Mamba
block has twice the parameters of an attention layer, so two replace an attention + MLP pair), final RMSNorm, head
tied to the embedding. Mamba-2.8B: HF state-spaces/mamba-2.8b-hf config.json (d_model 2560, 64 layers, vocabulary
50280, d_state 16, expand 2, conv 4, dt_rank ceil(2560/16) = 160)."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

MAMBA = Paper("Mamba: Linear-Time Sequence Modeling with Selective State Spaces", "2312.00752", 2023)


def mamba_config(vocab: int, d: int, layers: int, mamba: dict) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=1, d_ff=0,
                         mixers=("mamba",), mixer_hparams={"mamba": mamba}, ffns=("none",),
                         norm="rms", norm_eps=1e-5, max_seq_len=2048, tie_embeddings=True)


@register_model("mamba-2.8b")
def mamba_2_8b() -> ModelPreset:
    return ModelPreset(
        family="Mamba", paper=MAMBA, kind="decoder", stack=CausalLM,
        full=mamba_config(50280, 2560, 64, {"d_state": 16, "d_conv": 4, "expand": 2}),
        tiny=mamba_config(256, 64, 2, {"d_state": 8, "d_conv": 4, "expand": 2, "chunk_size": 16}),
        published={"params": 2.8e9},  # the paper's Table 3 "Mamba-2.8B"; model name mamba-2.8b
        hf_config=hf.mamba_config,
    )
