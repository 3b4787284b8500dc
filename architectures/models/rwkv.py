"""RWKV-6 "Finch" language model (Peng et al. 2024, arXiv:2404.05892): a LayerNorm after the embedding (ln0), then
blocks x + TimeMix(LN(x)) (the ``rwkv6`` mixer: data-dependent token shift and decay, 64-channel heads) and
x + ChannelMix(LN(x)) (``channel_mix.py``: token shift, squared ReLU, receptance gate, d_ff = 3.5 d_model), a final
LayerNorm and an untied head. Finch 3B (the paper trains Finch at 1.6B and 3.1B): d_model 2560, 32 layers, heads of
64, vocabulary 65536, d_ff 8960, LoRA ranks 32 (token shift) and 64 (decay), as RWKV-LM's x060 code sets them. Hugging Face ``transformers`` implements RWKV-4
only, so there is no parity test."""
from __future__ import annotations

from ..spec import Paper
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

FINCH = Paper("Eagle and Finch: RWKV with Matrix-Valued States and Dynamic Recurrence", "2404.05892", 2024)


def rwkv6_config(vocab: int, d: int, layers: int, head_size: int, d_ff: int, ranks: dict) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=d // head_size, d_ff=d_ff,
                         mixers=("rwkv6",), mixer_hparams={"rwkv6": ranks}, ffns=("channel_mix",),
                         norm="layer", norm_eps=1e-5, embed_norm=True, max_seq_len=4096)


@register_model("rwkv6-3b")
def rwkv6_3b() -> ModelPreset:
    return ModelPreset(
        family="RWKV", paper=FINCH, kind="decoder", stack=CausalLM,
        full=rwkv6_config(65536, 2560, 32, 64, 8960, {"mix_rank": 32, "decay_rank": 64}),
        tiny=rwkv6_config(256, 64, 2, 32, 224, {"mix_rank": 8, "decay_rank": 8}),
        published={"params": 3.1e9},  # the abstract: "two Finch models with 1.6 and 3.1 billion parameters"
        notes="transformers implements RWKV-4 only: no Hugging Face parity",
    )
