"""Transformer-XL language model (Dai et al. 2019, arXiv:1901.02860): post-norm blocks LN(x + RelAttn(x)),
LN(x + FFN(x)) with the ``transformer_xl`` mixer (segment recurrence, relative positions; no absolute positions),
a ReLU FFN with biases. The enwik8 24-layer model of Table 2 (277M parameters): d_model 1024, 8 heads of 128,
d_inner 3072, 204 byte symbols, segment and memory length 512 in training (the mixer's segment_len / mem_len), the
softmax tied to the embedding. (The WikiText-103 model's 257M rest on an adaptive input and softmax with a
267k-word vocabulary, which this stack does not build.) Hugging Face ``transformers`` 5 no longer ships TransfoXL."""
from __future__ import annotations

from ..spec import Paper
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

TXL = Paper("Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context", "1901.02860", 2019)


def txl_config(vocab: int, d: int, layers: int, heads: int, d_ff: int, segment: int, mem: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                         mixers=("transformer_xl",),
                         mixer_hparams={"transformer_xl": {"segment_len": segment, "mem_len": mem}},
                         ffn="relu", ffn_bias=True, norm="layer", norm_eps=1e-5, norm_position="post",
                         max_seq_len=segment + mem, tie_embeddings=True)


@register_model("transformer-xl-enwik8")
def transformer_xl_enwik8() -> ModelPreset:
    return ModelPreset(
        family="Transformer-XL", paper=TXL, kind="decoder", stack=CausalLM,
        full=txl_config(204, 1024, 24, 8, 3072, 512, 512),
        tiny=txl_config(256, 64, 2, 4, 128, 16, 12),
        published={"params": 277e6},  # Table 2: 24L Transformer-XL on enwik8, 277M
        notes="r_w_bias / r_r_bias per layer (the released enwik8 code unties them); not in transformers 5",
    )
