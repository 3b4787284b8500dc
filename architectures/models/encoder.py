"""The encoder stack (BERT, RoBERTa, ViT, the encoder half of Transformer-base / T5 / Switch) and its config.

One layer: attention then a position-wise FFN, each in a residual branch, normalised after the sum (``pre_norm=False``:
Vaswani, BERT: x = norm(x + f(x))) or before the branch (``pre_norm=True``: T5, ViT: x = x + f(norm(x))).
``TransformerEncoder`` is the encoder-only model (BERT / RoBERTa): token + position (+ segment) embeddings, the
stack, and a masked-LM head or BERT's pooler. The same ``EncoderConfig`` describes the encoder-decoder
(``architectures/models/enc_dec.py``) and vision (``vit.py``) stacks: one flat dataclass, fields a stack does not use
keep their defaults.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import sinusoidal_positions
from .enc_attention import MultiHeadAttention, RelativePositionBias
from .encoder_config import ACTIVATIONS, EncoderConfig, FeedForward, make_norm  # noqa: F401 - re-exported
from .switch_moe import SwitchFFN


def make_ffn(cfg: EncoderConfig, layer: int) -> nn.Module:
    kind = cfg.ffn_pattern[layer % len(cfg.ffn_pattern)]
    if kind == "dense":
        return FeedForward(cfg)
    if kind == "moe":
        return SwitchFFN(cfg)
    raise ValueError(f"unknown ffn kind {kind!r} in ffn_pattern; expected 'dense' or 'moe'")


def residual(x: torch.Tensor, f, norm: nn.Module, pre_norm: bool) -> torch.Tensor:
    """x + f(norm(x)) (pre-norm) or norm(x + f(x)) (post-norm)."""
    return x + f(norm(x)) if pre_norm else norm(x + f(x))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.d_head, bias=cfg.bias, scaled=cfg.scaled)
        self.norm1, self.ffn, self.norm2 = make_norm(cfg), make_ffn(cfg, layer), make_norm(cfg)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = residual(x, lambda h: self.attn(h, position_bias=position_bias), self.norm1, self.pre_norm)
        return residual(x, self.ffn, self.norm2, self.pre_norm)


class EncoderStack(nn.Module):
    """n_layers EncoderLayers (bidirectional), with T5's relative bias (computed once, shared by every layer)
    and the final norm of pre-norm stacks. (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.relative = (RelativePositionBias(cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance, True)
                         if cfg.positions == "relative" else None)
        self.final_norm = make_norm(cfg) if cfg.final_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.relative(x.shape[1], x.shape[1], x.device) if self.relative is not None else None
        for layer in self.layers:
            x = layer(x, bias)
        return self.final_norm(x) if self.final_norm is not None else x


class TokenEmbedding(nn.Module):
    """Token (+ absolute position, + segment 0) embeddings, then BERT's embedding norm: (B, T) -> (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = (nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.positions == "learned" else None)
        self.segments = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.norm = make_norm(cfg) if cfg.embed_norm else None

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """tokens (B, T) at positions start..start+T-1 (a decoder's step passes its position)."""
        cfg, T = self.cfg, tokens.shape[1]
        x = self.tokens(tokens) * (math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0)  # (B, T, D)
        first = cfg.position_offset + start
        pos = torch.arange(first, first + T, device=tokens.device)
        if self.positions is not None:
            if first + T > cfg.max_seq_len:
                raise ValueError(f"{start + T} tokens exceed the {cfg.max_seq_len}-row learned position table")
            x = x + self.positions(pos)
        elif cfg.positions == "sinusoidal":
            x = x + sinusoidal_positions(pos, cfg.d_model).to(x.dtype)
        if self.segments is not None:
            x = x + self.segments.weight[0]  # every token in segment 0
        return self.norm(x) if self.norm is not None else x


def moe_inactive_params(model: nn.Module) -> int:
    """Parameters of the experts a token does not use: (n_experts - top_k) experts of every MoE layer."""
    return sum(m.inactive_params() for m in model.modules() if isinstance(m, SwitchFFN))


class ParamCounts:
    """``num_params`` and ``active_params`` of the encoder-family models (one place: encoder, vision, enc-dec)."""

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def active_params(self) -> int:
        """Per token: every parameter except the experts a token does not use."""
        return self.num_params() - moe_inactive_params(self)


class TransformerEncoder(ParamCounts, nn.Module):
    """BERT / RoBERTa: tokens (B, T) -> masked-LM logits (B, T, V) (head "mlm") or hidden states (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.head not in ("mlm", "pooler", "none"):
            raise ValueError(f"unknown encoder head {cfg.head!r}; expected 'mlm', 'pooler' or 'none'")
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg)
        self.encoder = EncoderStack(cfg)
        if cfg.head == "mlm":  # BERT's transform (dense, act, norm), then the decoder tied to the embedding + bias
            self.transform, self.transform_norm = nn.Linear(cfg.d_model, cfg.d_model), make_norm(cfg)
            self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        elif cfg.head == "pooler":
            self.pooler = nn.Linear(cfg.d_model, cfg.d_model)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(tokens))

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """BERT's pooled output: tanh(dense(h[CLS])), (B, D)."""
        return torch.tanh(self.pooler(self.hidden(tokens)[:, 0]))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.hidden(tokens)
        if self.cfg.head != "mlm":
            return h
        h = self.transform_norm(ACTIVATIONS[self.cfg.activation](self.transform(h)))
        return F.linear(h, self.embed.tokens.weight, self.lm_bias)  # (B, T, V)

    @property
    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())
