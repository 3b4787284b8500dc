"""T5-base (Raffel et al. 2019): a pre-norm encoder-decoder with scale-only RMS norms, no biases, unscaled scores,
learned relative position buckets (one table per stack, shared by its layers), ReLU FFNs and one embedding shared by
the encoder, the decoder and the output head (whose input is rescaled by d_model^-0.5).

Parameter convention: as Hugging Face's ``T5ForConditionalGeneration`` (tied head counted once). The published
"220M" (T5 paper, sec. 3.1.1: "roughly 220 million parameters") is 1.3% under the exact count of this architecture
(222.9M with the 32128-token vocabulary): the paper's figure is rounded down.
"""
from __future__ import annotations

import dataclasses

from ..spec import Paper
from .enc_dec import EncoderDecoder
from .encoder import EncoderConfig
from .registry import ModelPreset, register_model

T5_BASE = EncoderConfig(vocab_size=32128, d_model=768, n_layers=12, n_decoder_layers=12, n_heads=12, d_head=64,
                        d_ff=3072, activation="relu", norm="rms", norm_eps=1e-6, pre_norm=True, bias=False,
                        scaled=False, positions="relative", type_vocab_size=0, embed_norm=False, final_norm=True,
                        head="none", rescale_tied_head=True)
# CPU-sized: byte vocabulary, 2 + 2 layers of width 64
T5_TINY = dataclasses.replace(T5_BASE, vocab_size=256, d_model=64, n_layers=2, n_decoder_layers=2, n_heads=4,
                              d_head=16, d_ff=256)


def t5_hf_config(cfg: EncoderConfig):
    from transformers import T5Config

    return T5Config(vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
                    num_layers=cfg.n_layers, num_decoder_layers=cfg.n_decoder_layers, num_heads=cfg.n_heads,
                    relative_attention_num_buckets=cfg.relative_buckets,
                    relative_attention_max_distance=cfg.relative_max_distance, dropout_rate=0.0,
                    layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=cfg.activation,
                    tie_word_embeddings=cfg.tie_embeddings)


@register_model("t5-base")
def t5_base() -> ModelPreset:
    return ModelPreset(
        family="T5", paper=Paper("Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer",
                                 "1910.10683", 2019),
        kind="encoder-decoder", stack=EncoderDecoder, full=T5_BASE, tiny=T5_TINY,
        published={"params": 220e6},  # T5 paper, sec. 3.1.1: "roughly 220 million parameters"
        hf_config=t5_hf_config,
        notes="T5 v1.0 (ReLU FFN, tied head); the published 220M is rounded: 222.9M exactly")
