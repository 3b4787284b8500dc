"""The encoder-decoder model (Vaswani et al. 2017; T5; Switch): an encoder stack over the source, a decoder stack
over the target whose layers attend causally to the target and then to the encoder's output (cross-attention).

    src (B, S) -> embed -> EncoderStack -> memory (B, S, D)
    tgt (B, T) -> embed -> n_decoder_layers x [causal self-attention; cross-attention to memory; FFN]
               -> logits (B, T, V)

Embeddings are shared by the source, the target and (tied) the output head (Vaswani sec. 3.4, T5). T5 scales the
tied head's input by d_model^-0.5; Vaswani scales the embeddings by sqrt(d_model). Relative positions (T5): one
bias table for the encoder (bidirectional buckets) and one for the decoder (causal buckets); cross-attention has none.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .enc_attention import MultiHeadAttention, RelativePositionBias
from .encoder import EncoderConfig, EncoderStack, TokenEmbedding, make_ffn, make_norm, ParamCounts, residual


class DecoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        attn = dict(bias=cfg.bias, scaled=cfg.scaled)
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.d_head, **attn)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.d_head, **attn)
        self.ffn = make_ffn(cfg, layer)
        self.norm1, self.norm2, self.norm3 = make_norm(cfg), make_norm(cfg), make_norm(cfg)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        x = residual(x, lambda h: self.self_attn(h, causal=True, position_bias=position_bias), self.norm1,
                     self.pre_norm)
        x = residual(x, lambda h: self.cross_attn(h, memory), self.norm2, self.pre_norm)
        return residual(x, self.ffn, self.norm3, self.pre_norm)


class DecoderStack(nn.Module):
    """(B, T, D) target states and (B, S, D) memory -> (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_decoder_layers))
        self.relative = (RelativePositionBias(cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance, False)
                         if cfg.positions == "relative" else None)
        self.final_norm = make_norm(cfg) if cfg.final_norm else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        bias = self.relative(x.shape[1], x.shape[1], x.device) if self.relative is not None else None
        for layer in self.layers:
            x = layer(x, memory, bias)
        return self.final_norm(x) if self.final_norm is not None else x


class EncoderDecoder(ParamCounts, nn.Module):
    """(src (B, S), tgt (B, T)) -> logits (B, T, V): teacher-forced; logits[:, t] sees tgt[:, :t+1] and all of src."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.n_decoder_layers < 1:
            raise ValueError("an encoder-decoder needs n_decoder_layers >= 1")
        self.cfg = cfg
        self.embed = TokenEmbedding(dataclasses.replace(cfg, type_vocab_size=0))
        self.encoder, self.decoder = EncoderStack(cfg), DecoderStack(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(src))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        h = self.decoder(self.embed(tgt), self.encode(src))  # (B, T, D)
        if self.head is not None:
            return self.head(h)
        if self.cfg.rescale_tied_head:  # T5 (its embeddings are not scaled)
            h = h * self.cfg.d_model ** -0.5
        return F.linear(h, self.embed.tokens.weight)  # (B, T, V)

    @property
    def aux_loss(self) -> torch.Tensor:
        from .switch_moe import SwitchFFN

        losses = [m.aux_loss for m in self.modules() if isinstance(m, SwitchFFN)]
        return sum(losses, torch.zeros(())) / max(len(losses), 1)
