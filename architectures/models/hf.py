"""Hugging Face ``transformers`` interop (the ``oracles`` extra; transformers is imported lazily, inside functions).

- ``<family>_config(cfg)``: our ``DecoderConfig`` -> the ``transformers`` config of the same model (presets'
  ``hf_config``), so that ``AutoModelForCausalLM.from_config`` builds Hugging Face's implementation of it;
- ``from_hf_config(config | path to config.json)``: the reverse, a ``DecoderConfig`` from a transformers config;
- ``transplant(ours, theirs)``: copy Hugging Face's weights into our module, by the mapping below, for the logits
  equality tests.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

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


def gpt2_config(cfg: DecoderConfig):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model,
                      n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function="gelu_new",
                      layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def mistral_config(cfg: DecoderConfig):
    from transformers import MistralConfig

    attn = _gqa(cfg, "sliding_window")
    return MistralConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=attn.get("n_kv_heads") or cfg.n_heads, rms_norm_eps=cfg.norm_eps,
                         rope_parameters=_rope(attn.get("rope_theta", 1e4)), sliding_window=attn["window"],
                         max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=cfg.tie_embeddings)


def mixtral_config(cfg: DecoderConfig):
    from transformers import MixtralConfig

    attn = _gqa(cfg)
    return MixtralConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_expert,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=attn.get("n_kv_heads", cfg.n_heads), rms_norm_eps=cfg.norm_eps,
                         rope_parameters=_rope(attn.get("rope_theta", 1e4)), num_local_experts=cfg.n_experts,
                         num_experts_per_tok=cfg.top_k, max_position_embeddings=cfg.max_seq_len,
                         tie_word_embeddings=cfg.tie_embeddings, sliding_window=None)


def deepseek_v3_config(cfg: DecoderConfig):
    from transformers import DeepseekV3Config

    mla = _gqa(cfg, "mla")
    return DeepseekV3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        moe_intermediate_size=cfg.d_expert, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_shared_experts=cfg.n_shared, n_routed_experts=cfg.n_experts,
        routed_scaling_factor=cfg.routed_scale, kv_lora_rank=mla["kv_lora_rank"], q_lora_rank=mla["q_lora_rank"],
        qk_rope_head_dim=mla["qk_rope_head_dim"], v_head_dim=mla["v_head_dim"],
        qk_nope_head_dim=mla["qk_nope_head_dim"], n_group=cfg.router_groups, topk_group=cfg.router_topk_groups,
        num_experts_per_tok=cfg.top_k, first_k_dense_replace=len(cfg.first_ffns), norm_topk_prob=cfg.router_norm_topk,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters=_rope(mla.get("rope_theta", 1e4)), rope_interleave=False,  # our RoPE rotates half-split pairs
        max_position_embeddings=cfg.max_seq_len)


def jamba_config(cfg: DecoderConfig):
    from transformers import JambaConfig

    mamba, attn = _gqa(cfg, "mamba"), _gqa(cfg)
    period = len(cfg.mixers)
    return JambaConfig(
        vocab_size=cfg.vocab_size, tie_word_embeddings=cfg.tie_embeddings, hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=attn["n_kv_heads"], rms_norm_eps=cfg.norm_eps, num_experts_per_tok=cfg.top_k,
        num_experts=cfg.n_experts, expert_layer_period=len(cfg.ffns), expert_layer_offset=cfg.ffns.index("moe"),
        attn_layer_period=period, attn_layer_offset=cfg.mixers.index("gqa"), use_mamba_kernels=False,
        mamba_d_state=mamba["d_state"], mamba_d_conv=mamba["d_conv"], mamba_expand=mamba["expand"],
        mamba_dt_rank=mamba["dt_rank"], mamba_conv_bias=True, mamba_proj_bias=False,
        max_position_embeddings=cfg.max_seq_len)


def mamba_config(cfg: DecoderConfig):
    from transformers import MambaConfig

    m = _gqa(cfg, "mamba")
    return MambaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, state_size=m.get("d_state", 16),
                       num_hidden_layers=cfg.n_layers, layer_norm_epsilon=cfg.norm_eps, expand=m.get("expand", 2),
                       conv_kernel=m.get("d_conv", 4), use_bias=False, use_conv_bias=True,
                       time_step_rank=m.get("dt_rank") or "auto", tie_word_embeddings=cfg.tie_embeddings)


def kimi_linear_config(cfg: DecoderConfig):
    from transformers import KimiLinearConfig

    mla, kda = _gqa(cfg, "mla"), _gqa(cfg, "kda")
    layers = cfg.layer_mixers()
    return KimiLinearConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        moe_intermediate_size=cfg.d_expert, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_shared_experts=cfg.n_shared, routed_scaling_factor=cfg.routed_scale,
        kv_lora_rank=mla["kv_lora_rank"], q_lora_rank=mla["q_lora_rank"], qk_rope_head_dim=mla["qk_rope_head_dim"],
        v_head_dim=mla["v_head_dim"], qk_nope_head_dim=mla["qk_nope_head_dim"], num_experts_per_tok=cfg.top_k,
        num_local_experts=cfg.n_experts, norm_topk_prob=cfg.router_norm_topk, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        layer_types=["full_attention" if m == "mla" else "linear_attention" for m in layers],
        mlp_layer_types=["sparse" if f == "moe" else "dense" for f in cfg.layer_ffns()],
        linear_head_dim=kda["d_head"], linear_num_heads=cfg.n_heads, linear_conv_kernel_dim=kda.get("conv_size", 4),
        pad_token_id=None, bos_token_id=None, eos_token_id=None)


# ---- from a transformers config (object, or a local config.json) to ours ---------------------------------------
def from_hf_config(config) -> DecoderConfig:
    """A ``DecoderConfig`` from a ``transformers`` config object, a local ``config.json`` path or its directory.
    Supported model types: those of ``FROM_HF`` (llama, mistral, mixtral, gpt2, deepseek_v3, jamba, mamba,
    kimi_linear); anything else raises with the list."""
    import json
    from pathlib import Path

    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read a transformers config.json ({err})") from None
        if "model_type" not in data:
            raise ValueError(f"{path}: no 'model_type' field; cannot tell which architecture this is")
        from transformers import AutoConfig

        config = AutoConfig.for_model(data.pop("model_type"), **data)
    kind = getattr(config, "model_type", None)
    if kind not in FROM_HF:
        raise ValueError(f"model_type {kind!r} is not supported; supported: {sorted(FROM_HF)}")
    return FROM_HF[kind](config)


def _theta(c) -> float:
    rope = getattr(c, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(c, "rope_theta", 1e4)))


def _common(c, **kw) -> DecoderConfig:
    return DecoderConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                         n_heads=c.num_attention_heads, norm="rms", norm_eps=c.rms_norm_eps,
                         max_seq_len=c.max_position_embeddings, tie_embeddings=bool(c.tie_word_embeddings), **kw)


def _from_llama(c) -> DecoderConfig:
    kv = c.num_key_value_heads or c.num_attention_heads
    return _common(c, d_ff=c.intermediate_size, mixers=("gqa",),
                   mixer_hparams={"gqa": {"n_kv_heads": kv, "rope_theta": _theta(c)}})


def _from_mistral(c) -> DecoderConfig:
    if c.sliding_window is None:
        return _from_llama(c)
    return _common(c, d_ff=c.intermediate_size, mixers=("sliding_window",),
                   mixer_hparams={"sliding_window": {"window": c.sliding_window, "n_kv_heads": c.num_key_value_heads,
                                                     "rope_theta": _theta(c)}})


def _from_mixtral(c) -> DecoderConfig:
    base = _from_llama(c)
    return dataclasses.replace(base, ffns=("moe",), n_experts=c.num_local_experts, top_k=c.num_experts_per_tok,
                               d_expert=c.intermediate_size)


def _from_gpt2(c) -> DecoderConfig:
    return DecoderConfig(vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head,
                         d_ff=c.n_inner or 4 * c.n_embd, mixers=("standard",),
                         mixer_hparams={"standard": {"rope_theta": None, "bias": True}}, ffn="gelu_tanh",
                         ffn_bias=True, norm="layer", norm_eps=c.layer_norm_epsilon, positions="learned",
                         max_seq_len=c.n_positions, tie_embeddings=bool(c.tie_word_embeddings))


def _mla(c, theta) -> dict:
    return {"q_lora_rank": c.q_lora_rank, "kv_lora_rank": c.kv_lora_rank, "qk_rope_head_dim": c.qk_rope_head_dim,
            "qk_nope_head_dim": c.qk_nope_head_dim, "v_head_dim": c.v_head_dim, "rope_theta": theta}


def _from_deepseek_v3(c) -> DecoderConfig:
    return _common(c, d_ff=c.intermediate_size, mixers=("mla",), mixer_hparams={"mla": _mla(c, _theta(c))},
                   ffns=("moe",), first_ffns=("dense",) * c.first_k_dense_replace, n_experts=c.n_routed_experts,
                   top_k=c.num_experts_per_tok, n_shared=c.n_shared_experts, d_expert=c.moe_intermediate_size,
                   router_score="sigmoid", router_norm_topk=bool(c.norm_topk_prob),
                   routed_scale=c.routed_scaling_factor, router_groups=c.n_group, router_topk_groups=c.topk_group,
                   router_bias=True)


def _from_jamba(c) -> DecoderConfig:
    mixers = tuple("gqa" if i == c.attn_layer_offset else "mamba" for i in range(c.attn_layer_period))
    ffns = tuple("moe" if i == c.expert_layer_offset else "dense" for i in range(c.expert_layer_period))
    rank = c.mamba_dt_rank if c.mamba_dt_rank != "auto" else None
    mamba = {"d_state": c.mamba_d_state, "d_conv": c.mamba_d_conv, "expand": c.mamba_expand, "dt_rank": rank,
             "inner_norm_eps": c.rms_norm_eps}
    return _common(c, d_ff=c.intermediate_size, mixers=mixers,
                   mixer_hparams={"gqa": {"n_kv_heads": c.num_key_value_heads, "rope_theta": None}, "mamba": mamba},
                   ffns=ffns, n_experts=c.num_experts, top_k=c.num_experts_per_tok, d_expert=c.intermediate_size,
                   router_norm_topk=False)


def _from_mamba(c) -> DecoderConfig:
    rank = c.time_step_rank if c.time_step_rank != "auto" else None
    return DecoderConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=1,
                         d_ff=0, mixers=("mamba",), ffns=("none",), norm="rms", norm_eps=c.layer_norm_epsilon,
                         mixer_hparams={"mamba": {"d_state": c.state_size, "d_conv": c.conv_kernel,
                                                  "expand": c.expand, "dt_rank": rank}},
                         max_seq_len=2048, tie_embeddings=bool(c.tie_word_embeddings))


def _from_kimi_linear(c) -> DecoderConfig:
    mixers = tuple("mla" if t == "full_attention" else "kda" for t in c.layer_types)
    ffns = tuple("moe" if t == "sparse" else "dense" for t in c.mlp_layer_types)
    return _common(c, d_ff=c.intermediate_size, mixers=("kda",), first_mixers=mixers, ffns=("moe",),
                   first_ffns=ffns,
                   mixer_hparams={"kda": {"d_head": c.linear_head_dim, "gate_bias": False, "norm_eps": c.rms_norm_eps,
                                          "conv_size": c.linear_conv_kernel_dim}, "mla": _mla(c, None)},
                   n_experts=c.num_local_experts, top_k=c.num_experts_per_tok, n_shared=c.n_shared_experts,
                   d_expert=c.moe_intermediate_size, router_score="sigmoid", router_norm_topk=bool(c.norm_topk_prob),
                   routed_scale=c.routed_scaling_factor, router_groups=c.n_group or 1,
                   router_topk_groups=c.topk_group or 1, router_bias=True)


FROM_HF = {"llama": _from_llama, "mistral": _from_mistral, "mixtral": _from_mixtral, "gpt2": _from_gpt2,
           "deepseek_v3": _from_deepseek_v3, "jamba": _from_jamba, "mamba": _from_mamba,
           "kimi_linear": _from_kimi_linear}


# ---- weight transplant: Hugging Face's state dict into ours ---------------------------------------------------------
# Each rule: (regex on OUR parameter name, template of THEIR name (or a tuple of them), transform of their tensor(s));
# the first matching rule whose names their model has wins (Jamba's `wo` is attention's o_proj or Mamba's out_proj). Layer i of ours is
# layer i of theirs. Transforms: GPT-2's Conv1D stores (in, out), so its weights are transposed, and its fused c_attn
# is split into q, k, v; fused expert gate_up_proj (E, 2F, D) is split into our w_gate (first F rows) and w_up.
import torch  # noqa: E402  (the rules' transforms)


def _rows(i: int, n: int, dim: int = 0) -> Callable:
    return lambda t: t.chunk(n, dim=dim)[i]


def _t(t):
    return t.t()


_LLAMA_RULES = [
    (r"embed\.weight", "model.embed_tokens.weight", None),
    (r"norm\.weight", "model.norm.weight", None),
    (r"head\.weight", "lm_head.weight", None),
    (r"layers\.(\d+)\.norm1\.weight", r"model.layers.\1.input_layernorm.weight", None),
    (r"layers\.(\d+)\.norm2\.weight", r"model.layers.\1.post_attention_layernorm.weight", None),
    (r"layers\.(\d+)\.mixer\.w([qkvo])\.weight", r"model.layers.\1.self_attn.\2_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wq_a\.weight", r"model.layers.\1.self_attn.q_a_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.q_norm\.weight", r"model.layers.\1.self_attn.q_a_layernorm.weight", None),
    (r"layers\.(\d+)\.mixer\.wq_b\.weight", r"model.layers.\1.self_attn.q_b_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wkv_a\.weight", r"model.layers.\1.self_attn.kv_a_proj_with_mqa.weight", None),
    (r"layers\.(\d+)\.mixer\.kv_norm\.weight", r"model.layers.\1.self_attn.kv_a_layernorm.weight", None),
    (r"layers\.(\d+)\.mixer\.wkv_b\.weight", r"model.layers.\1.self_attn.kv_b_proj.weight", None),
    (r"layers\.(\d+)\.ffn\.(gate|up|down)\.weight", r"model.layers.\1.mlp.\2_proj.weight", None),
    (r"layers\.(\d+)\.ffn\.router\.weight", r"model.layers.\1.mlp.gate.weight", None),
    (r"layers\.(\d+)\.ffn\.router\.score_bias", r"model.layers.\1.mlp.gate.e_score_correction_bias", None),
    (r"layers\.(\d+)\.ffn\.w_gate", r"model.layers.\1.mlp.experts.gate_up_proj", _rows(0, 2, 1)),
    (r"layers\.(\d+)\.ffn\.w_up", r"model.layers.\1.mlp.experts.gate_up_proj", _rows(1, 2, 1)),
    (r"layers\.(\d+)\.ffn\.w_down", r"model.layers.\1.mlp.experts.down_proj", None),
    (r"layers\.(\d+)\.ffn\.shared\.(gate|up|down)\.weight", r"model.layers.\1.mlp.shared_experts.\2_proj.weight", None),
]

_GPT2_RULES = [
    (r"embed\.weight", "transformer.wte.weight", None),
    (r"positions\.table\.weight", "transformer.wpe.weight", None),
    (r"norm\.(weight|bias)", r"transformer.ln_f.\1", None),
    (r"layers\.(\d+)\.norm1\.(weight|bias)", r"transformer.h.\1.ln_1.\2", None),
    (r"layers\.(\d+)\.norm2\.(weight|bias)", r"transformer.h.\1.ln_2.\2", None),
    *[(rf"layers\.(\d+)\.mixer\.w{n}\.weight", r"transformer.h.\1.attn.c_attn.weight",
       (lambda i: lambda t: t.chunk(3, dim=1)[i].t())(i)) for i, n in enumerate("qkv")],
    *[(rf"layers\.(\d+)\.mixer\.w{n}\.bias", r"transformer.h.\1.attn.c_attn.bias", _rows(i, 3)) for i, n in
      enumerate("qkv")],
    (r"layers\.(\d+)\.mixer\.wo\.weight", r"transformer.h.\1.attn.c_proj.weight", _t),
    (r"layers\.(\d+)\.mixer\.wo\.bias", r"transformer.h.\1.attn.c_proj.bias", None),
    (r"layers\.(\d+)\.ffn\.up\.weight", r"transformer.h.\1.mlp.c_fc.weight", _t),
    (r"layers\.(\d+)\.ffn\.up\.bias", r"transformer.h.\1.mlp.c_fc.bias", None),
    (r"layers\.(\d+)\.ffn\.down\.weight", r"transformer.h.\1.mlp.c_proj.weight", _t),
    (r"layers\.(\d+)\.ffn\.down\.bias", r"transformer.h.\1.mlp.c_proj.bias", None),
]

_MAMBA_RULES = [
    (r"embed\.weight", "backbone.embeddings.weight", None),
    (r"norm\.weight", "backbone.norm_f.weight", None),
    (r"layers\.(\d+)\.norm1\.weight", r"backbone.layers.\1.norm.weight", None),
    (r"layers\.(\d+)\.mixer\.wo\.weight", r"backbone.layers.\1.mixer.out_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.(.*)", r"backbone.layers.\1.mixer.\2", None),  # same names: in_proj, conv1d, x_proj...
]

_JAMBA_RULES = [
    (r"embed\.weight", "model.embed_tokens.weight", None),
    (r"norm\.weight", "model.final_layernorm.weight", None),
    (r"head\.weight", "lm_head.weight", None),
    (r"layers\.(\d+)\.norm1\.weight", r"model.layers.\1.input_layernorm.weight", None),
    (r"layers\.(\d+)\.norm2\.weight", r"model.layers.\1.pre_ff_layernorm.weight", None),
    (r"layers\.(\d+)\.mixer\.w([qkvo])\.weight", r"model.layers.\1.self_attn.\2_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wo\.weight", r"model.layers.\1.mamba.out_proj.weight", None),
    *[(rf"layers\.(\d+)\.mixer\.{n}_norm", rf"model.layers.\1.mamba.{n.lower()}_layernorm.weight", None)
      for n in ("dt", "B", "C")],
    (r"layers\.(\d+)\.mixer\.(.*)", r"model.layers.\1.mamba.\2", None),  # in_proj, conv1d, x_proj, dt_proj, A_log, D
    (r"layers\.(\d+)\.ffn\.(gate|up|down)\.weight", r"model.layers.\1.feed_forward.\2_proj.weight", None),
    (r"layers\.(\d+)\.ffn\.router\.weight", r"model.layers.\1.feed_forward.router.weight", None),
    (r"layers\.(\d+)\.ffn\.w_gate", r"model.layers.\1.feed_forward.experts.gate_up_proj", _rows(0, 2, 1)),
    (r"layers\.(\d+)\.ffn\.w_up", r"model.layers.\1.feed_forward.experts.gate_up_proj", _rows(1, 2, 1)),
    (r"layers\.(\d+)\.ffn\.w_down", r"model.layers.\1.feed_forward.experts.down_proj", None),
]

_KDA = r"model.layers.\1.self_attn."
_KIMI_RULES = [  # the KDA layers; MLA, MoE, norms and embeddings are DeepSeek's names
    (r"layers\.(\d+)\.mixer\.wqkv\.weight", (_KDA + "q_proj.weight", _KDA + "k_proj.weight", _KDA + "v_proj.weight"),
     lambda q, k, v: torch.cat([q, k, v], dim=0)),  # our fused (3 * H * Dh, D): q, k, v channels in that order
    (r"layers\.(\d+)\.mixer\.conv\.weight", _KDA + "conv1d.weight", lambda t: t[:, 0]),  # (C, 1, W) -> (C, W)
    (r"layers\.(\d+)\.mixer\.wbeta\.weight", _KDA + "b_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wf1\.weight", _KDA + "forget_gate.f_a_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wf2\.weight", _KDA + "forget_gate.f_b_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.A_log", _KDA + "forget_gate.A_log", lambda t: t.reshape(-1)),  # (1, 1, H, 1) -> (H,)
    (r"layers\.(\d+)\.mixer\.dt_bias", _KDA + "forget_gate.dt_bias", None),
    (r"layers\.(\d+)\.mixer\.wg1\.weight", _KDA + "g_a_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.wg2\.weight", _KDA + "g_b_proj.weight", None),
    (r"layers\.(\d+)\.mixer\.norm_weight", _KDA + "o_norm.weight", None),
    *_LLAMA_RULES,
]

TRANSPLANT_RULES = {"llama": _LLAMA_RULES, "mistral": _LLAMA_RULES, "mixtral": _LLAMA_RULES,
                    "deepseek_v3": _LLAMA_RULES, "gpt2": _GPT2_RULES, "mamba": _MAMBA_RULES, "jamba": _JAMBA_RULES,
                    "kimi_linear": _KIMI_RULES}


def transplant(ours, theirs) -> None:
    """Copy the weights of a ``transformers`` model into ours (same config, e.g. ``hf_config(cfg)``), in place.
    Every one of our parameters and buffers must be covered by a rule, and every one of their parameters used."""
    import re

    import torch

    kind = theirs.config.model_type
    if kind not in TRANSPLANT_RULES:
        raise ValueError(f"no transplant rules for model_type {kind!r}; have {sorted(TRANSPLANT_RULES)}")
    src = theirs.state_dict()
    used, new = set(), {}
    for name in ours.state_dict():
        tried = []
        for pattern, template, fn in TRANSPLANT_RULES[kind]:
            if re.fullmatch(pattern, name):
                keys = [re.sub(pattern, t, name) for t in ((template,) if isinstance(template, str) else template)]
                if any(k not in src for k in keys):  # e.g. an attention rule on a Mamba layer: try the next rule
                    tried += keys
                    continue
                new[name] = src[keys[0]] if fn is None else fn(*(src[k] for k in keys))
                used.update(keys)
                break
        else:
            raise KeyError(f"no transplant rule for our {name} (model_type {kind}); tried their {tried}")
    unused = {k for k, _ in theirs.named_parameters()} - used
    if getattr(theirs.config, "tie_word_embeddings", False):
        unused.discard("lm_head.weight")
    if unused:
        raise KeyError(f"their parameters left unused by the mapping: {sorted(unused)}")
    with torch.no_grad():
        ours.load_state_dict({k: v.clone() for k, v in new.items()}, strict=True)
