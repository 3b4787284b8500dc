"""The decoder-only language model stack that every decoder preset builds (GPT-2 ... Kimi Linear):

    tokens -> embedding (+ learned / sinusoidal positions) (-> embedding norm, RWKV's ln0)
           -> n_layers blocks, layer i = (mixer_i, ffn_i) by layer pattern (``layer_pattern.expand``)
           -> final norm -> head (tied to the embedding or its own matrix) -> logits

A block is pre-norm ``x + mixer(norm1(x)); x + ffn(norm2(x))`` (GPT-2 onwards), post-norm
``norm1(x + mixer(x)); norm2(x + ffn(x))`` (Transformer-XL, the 2017 Transformer; no final norm), or parallel
``x + mixer(norm(x)) + ffn(norm(x))`` (PaLM, GPT-J: one norm, both branches read it). Mixers come from the mixer
registry (``create_mixer(name, d_model, n_heads, **mixer_hparams[name])``); each layer's FFN is "dense" (``ffn.py``),
"moe" (``moe.py``), "channel_mix" (RWKV, ``channel_mix.py``) or "none" (Mamba: mixer-only blocks).

Decoding: ``prefill(tokens) -> (logits, state)``, ``step(token, state) -> (logits, state)``; the state holds the
position and, per layer, the mixer's state and the stateful FFN's (RWKV's token shift), and is never mutated.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import create_mixer
from .channel_mix import ChannelMix
from .ffn import DenseFFN
from .layer_pattern import expand
from .moe import MoE
from .norms import make_norm
from .positions import make_positions

FFN_PATTERN_KINDS = ("dense", "moe", "channel_mix", "none")


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int  # tokenizer vocabulary (rows of the embedding and of the head)
    d_model: int  # residual stream width
    n_layers: int  # number of blocks
    n_heads: int  # query heads, passed to every mixer (head size = d_model / n_heads unless a mixer sets its own)
    d_ff: int  # hidden width of the dense FFN (as published, e.g. LLaMA-2-7B 11008)
    # ---- layer pattern: which mixer each layer gets (hybrids are data) ----
    mixers: tuple[str, ...] = ("gqa",)  # mixer registry names, repeated cyclically over the layers
    first_mixers: tuple[str, ...] = ()  # fixed leading layers before the cyclic pattern
    mixer_hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per mixer name: its hparams
    # ---- FFN per layer ----
    ffns: tuple[str, ...] = ("dense",)  # "dense" | "moe" | "channel_mix" | "none", repeated cyclically
    first_ffns: tuple[str, ...] = ()  # fixed leading layers (DeepSeek-V3: three dense layers before the MoE ones)
    ffn: str = "swiglu"  # dense FFN activation: "swiglu" | "gelu" | "gelu_tanh" | "relu"
    ffn_bias: bool = False  # biases in the dense FFN (GPT-2: yes; LLaMA, PaLM: no)
    # ---- mixture of experts (layers whose ffn is "moe") ----
    n_experts: int = 0  # routed experts
    top_k: int = 0  # experts per token
    n_shared: int = 0  # shared experts every token uses (DeepSeek, Kimi: 1); width n_shared * d_expert
    d_expert: int = 0  # hidden width of one expert (Mixtral: 14336, DeepSeek-V3's fine-grained experts: 2048)
    capacity_factor: float | None = None  # None: no token dropping (inference); Switch trains with 1.25
    router_score: str = "softmax"  # "softmax" (Mixtral, Jamba) | "sigmoid" (DeepSeek-V3, Kimi Linear)
    router_norm_topk: bool = True  # renormalise the k selected weights to sum to 1 (Jamba: no)
    routed_scale: float = 1.0  # multiplies the routed weights (DeepSeek-V3: 2.5, Kimi Linear: 2.446)
    router_groups: int = 1  # expert groups for group-limited routing (DeepSeek-V3: 8)
    router_topk_groups: int = 1  # groups a token may route into (DeepSeek-V3: 4)
    router_bias: bool = False  # the selection-only bias buffer of auxiliary-loss-free balancing (DeepSeek-V3)
    # ---- norms and block layout ----
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-5  # as in the published config (LLaMA-2 1e-5, Mistral 1e-5, DeepSeek-V3 1e-6)
    norm_bias: bool = True  # LayerNorm bias (PaLM: none); RMSNorm has none
    norm_position: str = "pre"  # "pre" (final norm after the last block) | "post" (Transformer-XL, no final norm)
    parallel_block: bool = False  # PaLM: mixer and FFN read the same normalised input, both added to x
    embed_norm: bool = False  # a norm right after the embedding (RWKV's ln0)
    # ---- positions and head ----
    positions: str = "none"  # "none" (mixers handle order: RoPE, relative, recurrence) | "learned" | "sinusoidal"
    max_seq_len: int = 4096  # rows of a learned position table (GPT-2: 1024); documentation for the others
    tie_embeddings: bool = False  # head = embedding matrix (GPT-2, PaLM, Mamba) or its own (LLaMA, Mixtral)

    def layer_mixers(self) -> list[str]:
        return expand(self.mixers, self.n_layers, self.first_mixers)

    def layer_ffns(self) -> list[str]:
        kinds = expand(self.ffns, self.n_layers, self.first_ffns)
        bad = sorted(set(kinds) - set(FFN_PATTERN_KINDS))
        if bad:
            raise ValueError(f"unknown ffn kinds {bad} in the FFN pattern; expected {FFN_PATTERN_KINDS}")
        return kinds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_layer_ffn(cfg: DecoderConfig, kind: str) -> nn.Module | None:
    if kind == "dense":
        return DenseFFN(cfg.d_model, cfg.d_ff, cfg.ffn, bias=cfg.ffn_bias)
    if kind == "moe":
        return MoE(cfg.d_model, cfg.d_expert, cfg.n_experts, cfg.top_k, n_shared=cfg.n_shared,
                   capacity_factor=cfg.capacity_factor, score=cfg.router_score, norm_topk=cfg.router_norm_topk,
                   routed_scale=cfg.routed_scale, n_groups=cfg.router_groups, topk_groups=cfg.router_topk_groups,
                   score_bias=cfg.router_bias)
    if kind == "channel_mix":
        return ChannelMix(cfg.d_model, cfg.d_ff)
    return None


class DecoderBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig, mixer: str, ffn: str):
        super().__init__()
        if cfg.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {cfg.norm_position!r}")
        self.post_norm, self.parallel = cfg.norm_position == "post", cfg.parallel_block
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias)
        self.mixer = create_mixer(mixer, cfg.d_model, cfg.n_heads, causal=True,
                                  **dict(cfg.mixer_hparams.get(mixer, {})))
        self.ffn = make_layer_ffn(cfg, ffn)
        needs_norm2 = self.ffn is not None and not self.parallel
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias) if needs_norm2 else None

    def _residual(self, x: torch.Tensor, mix: Callable, ffn: Callable) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + mix(x))
            return self.norm2(x + ffn(x)) if self.ffn is not None else x
        h = self.norm1(x)
        if self.parallel:
            return x + mix(h) + ffn(h)
        x = x + mix(h)
        return x + ffn(self.norm2(x)) if self.ffn is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x, self.mixer, self.ffn)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        out: dict[str, Any] = {"ffn": None}

        def mix(h):
            y, out["mixer"] = self.mixer.prefill(h)
            return y

        def ffn(h):
            if getattr(self.ffn, "stateful", False):
                y, out["ffn"] = self.ffn.prefill(h)
                return y
            return self.ffn(h)

        x = self._residual(x, mix, ffn)
        return x, (out["mixer"], out["ffn"])

    def init_state(self, batch: int) -> tuple:
        stateful = getattr(self.ffn, "stateful", False)
        return self.mixer.init_state(batch), (self.ffn.init_state(batch) if stateful else None)

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        out: dict[str, Any] = {"ffn": state[1]}

        def mix(h):
            y, out["mixer"] = self.mixer.step(h, state[0])
            return y

        def ffn(h):
            if getattr(self.ffn, "stateful", False):
                y, out["ffn"] = self.ffn.step(h, state[1])
                return y
            return self.ffn(h)

        x_t = self._residual(x_t, mix, ffn)
        return x_t, (out["mixer"], out["ffn"])

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        ffn = self.ffn.state_bytes(batch, dtype) if getattr(self.ffn, "stateful", False) else 0
        return self.mixer.state_bytes(batch, seq_len, dtype) + ffn


class CausalLM(nn.Module):
    """The decoder-only LM built from a ``DecoderConfig``. tokens (B, T) int64 -> logits (B, T, vocab)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = make_positions(cfg.positions, cfg.d_model, cfg.max_seq_len)
        self.embed_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias) if cfg.embed_norm else None
        self.layers = nn.ModuleList(DecoderBlock(cfg, m, f) for m, f in zip(cfg.layer_mixers(), cfg.layer_ffns()))
        pre = cfg.norm_position == "pre"
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias) if pre else None
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)  # GPT-2's; N(0, 1) would give huge tied logits
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=0.02)
        if self.positions is not None and self.positions.table is not None:
            nn.init.normal_(self.positions.table.weight, std=0.01)

    # ---- pieces ---------------------------------------------------------------------------------------------------
    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """tokens (B, T) or (B,) -> (B, T, D) or (B, D)."""
        x = self.embed(tokens)
        if self.positions is not None:
            T = tokens.shape[1] if tokens.dim() == 2 else 1
            pe = self.positions(start, T, tokens.device).to(x.dtype)  # (T, D)
            x = x + (pe if tokens.dim() == 2 else pe[0])
        return self.embed_norm(x) if self.embed_norm is not None else x

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h) if self.norm is not None else h
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    # ---- the contract -------------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self._embed(tokens, 0)  # (B, T, D)
        for layer in self.layers:
            x = layer(x)
        return self._logits(x)

    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        x, states = self._embed(tokens, 0), []
        for layer in self.layers:
            x, s = layer.prefill(x)
            states.append(s)
        return self._logits(x), {"pos": tokens.shape[1], "layers": states}

    def init_state(self, batch: int) -> dict[str, Any]:
        return {"pos": 0, "layers": [layer.init_state(batch) for layer in self.layers]}

    def step(self, token: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """token (B,) -> logits (B, vocab) of the next token, and the new state."""
        x, states = self._embed(token, state["pos"]), []
        for layer, s in zip(self.layers, state["layers"]):
            x, s = layer.step(x, s)
            states.append(s)
        return self._logits(x), {"pos": state["pos"] + 1, "layers": states}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        """Decode state of all layers after seq_len tokens (KV caches, latent caches, recurrent states)."""
        return sum(layer.state_bytes(batch, seq_len, dtype) for layer in self.layers)

    def num_params(self) -> int:
        """All parameters (tied embedding counted once), as ``transformers``' ``num_parameters()``."""
        return sum(p.numel() for p in self.parameters())

    def active_params(self) -> int:
        """Parameters one token uses: all but the routed experts it is not sent to. Embedding and head are
        counted (as Mixtral's 12.9B and DeepSeek-V3's 37B do)."""
        return self.num_params() - sum(m.inactive_params() for m in self.modules() if isinstance(m, MoE))

    @property
    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' load-balancing losses of the last forward (0 for dense models)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE)]
        return torch.stack(losses).sum() if losses else torch.zeros(())
