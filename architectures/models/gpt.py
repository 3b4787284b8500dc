"""GPT-2 (Radford et al. 2019) and GPT-3 (Brown et al. 2020, arXiv:2005.14165): learned absolute positions, pre-norm
LayerNorm, multi-head attention and a GELU (tanh approximation) MLP, all with biases, the head tied to the embedding.
GPT-2 124M is the Hugging Face ``gpt2`` config.json; GPT-3 175B is the paper's Table 2.1 (96 layers, d_model 12288,
96 heads of 128, context 2048, the GPT-2 vocabulary of 50257).

GPT-3 alternates dense and locally banded sparse attention layers; the band width is not published, and the two have
the same parameters, so the preset uses dense attention in every layer (parameters are exact, FLOPs at long context an
upper bound)."""
from __future__ import annotations

from ..spec import Paper
from . import hf
from .decoder import CausalLM, DecoderConfig
from .registry import ModelPreset, register_model

GPT2 = Paper("Language Models are Unsupervised Multitask Learners", "OpenAI report", 2019)  # not on arXiv
GPT3 = Paper("Language Models are Few-Shot Learners", "2005.14165", 2020)


def gpt_config(vocab: int, d: int, layers: int, heads: int, ctx: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=4 * d,
                         mixers=("standard",), mixer_hparams={"standard": {"rope_theta": None, "bias": True}},
                         ffn="gelu_tanh", ffn_bias=True, norm="layer", norm_eps=1e-5, positions="learned",
                         max_seq_len=ctx, tie_embeddings=True)


@register_model("gpt2")
def gpt2() -> ModelPreset:
    return ModelPreset(
        family="GPT", paper=GPT2, kind="decoder", stack=CausalLM,
        # HF gpt2 config.json: vocab 50257, n_positions 1024, n_embd 768, n_layer 12, n_head 12, eps 1e-5
        full=gpt_config(50257, 768, 12, 12, 1024),
        tiny=gpt_config(256, 64, 2, 4, 128),
        published={"params": 124e6},  # "GPT-2 small, 124M" (the 117M of the paper's Table 2 was a miscount)
        hf_config=hf.gpt2_config,
    )


@register_model("gpt3-175b")
def gpt3_175b() -> ModelPreset:
    return ModelPreset(
        family="GPT", paper=GPT3, kind="decoder", stack=CausalLM,
        full=gpt_config(50257, 12288, 96, 96, 2048),  # Table 2.1: GPT-3 175B
        tiny=gpt_config(256, 96, 2, 4, 128),
        published={"params": 175.0e9},  # Table 2.1: 175.0B
        hf_config=hf.gpt2_config,  # the same module as GPT-2's (dense attention), larger
        notes="dense attention in every layer (the paper alternates dense and locally banded sparse layers: same "
              "parameters, band width not published)",
    )
