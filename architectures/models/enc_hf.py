"""Hugging Face configs -> ``EncoderConfig`` for the encoder, encoder-decoder and vision presets (bert, roberta, t5,
switch_transformers, vit), registered into ``hf.FROM_HF`` so that ``hf.from_hf_config`` reads them too."""
from __future__ import annotations

from . import hf
from .bert import BERT_BASE, ROBERTA_BASE
from .encoder import EncoderConfig
from .switch import SWITCH_BASE_8
from .t5 import T5_BASE
from .vit import VIT_B16


def _bert(c, base: EncoderConfig = BERT_BASE, offset: int = 0) -> EncoderConfig:
    import dataclasses

    return dataclasses.replace(base, vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                               n_heads=c.num_attention_heads, d_ff=c.intermediate_size, activation=c.hidden_act,
                               max_seq_len=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                               norm_eps=c.layer_norm_eps, position_offset=offset)


def _roberta(c) -> EncoderConfig:
    return _bert(c, ROBERTA_BASE, offset=c.pad_token_id + 1)


def _t5(c, base: EncoderConfig = T5_BASE) -> EncoderConfig:
    import dataclasses

    return dataclasses.replace(base, vocab_size=c.vocab_size, d_model=c.d_model, d_head=c.d_kv, d_ff=c.d_ff,
                               n_layers=c.num_layers, n_decoder_layers=c.num_decoder_layers, n_heads=c.num_heads,
                               relative_buckets=c.relative_attention_num_buckets,
                               relative_max_distance=c.relative_attention_max_distance, norm_eps=c.layer_norm_epsilon,
                               tie_embeddings=c.tie_word_embeddings)


def _switch(c) -> EncoderConfig:
    import dataclasses

    if c.encoder_sparse_step != 2 or c.decoder_sparse_step != 2:
        raise ValueError(f"only every-other-layer MoE (sparse step 2) is supported, got {c.encoder_sparse_step}, "
                         f"{c.decoder_sparse_step}")
    cfg = _t5(c, SWITCH_BASE_8)
    # capacity: transformers holds a fixed expert_capacity (tokens), not a factor; the preset's factor is kept
    return dataclasses.replace(cfg, n_experts=c.num_experts, activation=c.dense_act_fn,
                               router_jitter=float(c.router_jitter_noise))


def _vit(c) -> EncoderConfig:
    import dataclasses

    return dataclasses.replace(VIT_B16, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                               n_heads=c.num_attention_heads, d_ff=c.intermediate_size, activation=c.hidden_act,
                               norm_eps=c.layer_norm_eps, image_size=c.image_size, patch_size=c.patch_size,
                               n_channels=c.num_channels, bias=c.qkv_bias, n_classes=c.num_labels)


for _kind, _fn in {"bert": _bert, "roberta": _roberta, "t5": _t5, "switch_transformers": _switch,
                   "vit": _vit}.items():
    hf.FROM_HF.setdefault(_kind, _fn)
