"""Hugging Face ``transformers`` interop (the ``oracles`` extra; transformers is imported lazily, inside functions).

- ``<family>_config(cfg)``: our ``DecoderConfig`` -> the ``transformers`` config of the same model (presets'
  ``hf_config``), so that ``AutoModelForCausalLM.from_config`` builds Hugging Face's implementation of it;
- ``from_hf_config(config | path to config.json)``: the reverse, a ``DecoderConfig`` from a transformers config;
- ``transplant(ours, theirs)``: copy Hugging Face's weights into our module, by the mapping below, for the logits
  equality tests.
"""
from __future__ import annotations

from typing import Any

from .decoder import DecoderConfig


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": float(theta)}


def _gqa(cfg: DecoderConfig, name: str = "gqa") -> dict[str, Any]:
    return dict(cfg.mixer_hparams.get(name, {}))


def llama_config(cfg: DecoderConfig):
    from transformers import LlamaConfig

    attn = _gqa(cfg)
    return LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=attn.get("n_kv_heads", cfg.n_heads), rms_norm_eps=cfg.norm_eps,
                       rope_parameters=_rope(attn.get("rope_theta", 1e4)), max_position_embeddings=cfg.max_seq_len,
                       tie_word_embeddings=cfg.tie_embeddings)
