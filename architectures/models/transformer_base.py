"""Transformer-base (Vaswani et al. 2017, Table 3 "base"): the original encoder-decoder. Post-norm layers with
biases, sinusoidal positions, embeddings scaled by sqrt(d_model), ReLU FFNs, and one embedding shared by the source,
the target and the pre-softmax projection (sec. 3.4) over the 37000-token shared BPE vocabulary of WMT'14 EN-DE.

Published "65M" (Table 3). The exact count of this description is 63.1M (2.9% under): the paper's figure is not
reproducible from its stated hyperparameters with tied embeddings (untied source and target embeddings would give
82M). No ``transformers`` class implements this model exactly (Marian counts its sinusoidal table as a parameter).
"""
from __future__ import annotations

import dataclasses

from ..spec import Paper
from .enc_dec import EncoderDecoder
from .encoder import EncoderConfig
from .registry import ModelPreset, register_model

TRANSFORMER_BASE = EncoderConfig(vocab_size=37000, d_model=512, n_layers=6, n_decoder_layers=6, n_heads=8,
                                 d_ff=2048, activation="relu", norm="layer", norm_eps=1e-5, pre_norm=False,
                                 positions="sinusoidal", type_vocab_size=0, embed_norm=False, head="none",
                                 scale_embeddings=True)
# CPU-sized: byte vocabulary, 2 + 2 layers of width 64
TRANSFORMER_TINY = dataclasses.replace(TRANSFORMER_BASE, vocab_size=256, d_model=64, n_layers=2, n_decoder_layers=2,
                                       n_heads=4, d_ff=256)


@register_model("transformer-base")
def transformer_base() -> ModelPreset:
    return ModelPreset(
        family="Transformer", paper=Paper("Attention Is All You Need", "1706.03762", 2017),
        kind="encoder-decoder", stack=EncoderDecoder, full=TRANSFORMER_BASE, tiny=TRANSFORMER_TINY,
        published={"params": 65e6},  # Vaswani et al. 2017, Table 3, row "base": 65 x 10^6
        notes="shared source/target/output embedding; the published 65M is 2.9% over the exact 63.1M")
