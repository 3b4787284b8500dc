"""BERT-base (Devlin et al. 2018) and RoBERTa-base (Liu et al. 2019, the same architecture as a config variant):
post-norm encoders with learned positions, segment embeddings and a masked-LM head tied to the token embedding.

Parameter convention: every parameter of the module once (the tied decoder is the embedding), as Hugging Face's
``BertForMaskedLM`` counts; the ``pooler`` head variant is ``BertModel``. Published "110M" (BERT paper, sec. 3:
"BERT_BASE (L=12, H=768, A=12, Total Parameters=110M)").
"""
from __future__ import annotations

import dataclasses

from ..spec import Paper
from .encoder import EncoderConfig, TransformerEncoder
from .registry import ModelPreset, register_model

BERT_BASE = EncoderConfig(vocab_size=30522, d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_seq_len=512,
                          type_vocab_size=2)
# CPU-sized: byte vocabulary (the embedded corpus), 2 layers of width 64
BERT_TINY = EncoderConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=512)


def bert_hf_config(cfg: EncoderConfig):
    from transformers import BertConfig

    return BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                      num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff, hidden_act=cfg.activation,
                      max_position_embeddings=cfg.max_seq_len, type_vocab_size=cfg.type_vocab_size,
                      layer_norm_eps=cfg.norm_eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@register_model("bert-base")
def bert_base() -> ModelPreset:
    return ModelPreset(
        family="BERT", paper=Paper("BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
                                   "1810.04805", 2018),
        kind="encoder", stack=TransformerEncoder, full=BERT_BASE, tiny=BERT_TINY,
        published={"params": 110e6},  # BERT paper, sec. 3: BERT_BASE ... Total Parameters=110M
        hf_config=bert_hf_config,
        notes="masked-LM head (BertForMaskedLM); head='pooler' is BertModel")


# RoBERTa: BERT's architecture; BPE vocabulary of 50265, positions start at padding_idx + 1 = 2 (514-row table),
# one (unused) segment
ROBERTA_BASE = dataclasses.replace(BERT_BASE, vocab_size=50265, max_seq_len=514, position_offset=2,
                                   type_vocab_size=1, norm_eps=1e-5)
ROBERTA_TINY = dataclasses.replace(BERT_TINY, max_seq_len=514, position_offset=2, type_vocab_size=1, norm_eps=1e-5)


def roberta_hf_config(cfg: EncoderConfig):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff, hidden_act=cfg.activation,
                         max_position_embeddings=cfg.max_seq_len, type_vocab_size=cfg.type_vocab_size,
                         layer_norm_eps=cfg.norm_eps, pad_token_id=cfg.position_offset - 1,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@register_model("roberta-base")
def roberta_base() -> ModelPreset:
    return ModelPreset(
        family="BERT", paper=Paper("RoBERTa: A Robustly Optimized BERT Pretraining Approach", "1907.11692", 2019),
        kind="encoder", stack=TransformerEncoder, full=ROBERTA_BASE, tiny=ROBERTA_TINY,
        published={"params": 125e6},  # RoBERTa-base model card / fairseq README: 125M
        hf_config=roberta_hf_config,
        notes="BERT with a 50265 BPE vocabulary, positions from 2, one segment; masked-LM head (RobertaForMaskedLM)")
