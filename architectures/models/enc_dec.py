"""The encoder-decoder model (Vaswani et al. 2017; T5; Switch): an encoder stack over the source, a decoder stack
over the target whose layers attend causally to the target and then to the encoder's output (cross-attention).

    src (B, S) -> embed -> EncoderStack -> memory (B, S, D)
    tgt (B, T) -> embed -> n_decoder_layers x [causal self-attention; cross-attention to memory; FFN]
               -> logits (B, T, V)

Embeddings are shared by the source, the target and (tied) the output head (Vaswani sec. 3.4, T5). T5 scales the
tied head's input by d_model^-0.5; Vaswani scales the embeddings by sqrt(d_model). Relative positions (T5): one
bias table for the encoder (bidirectional buckets) and one for the decoder (causal buckets); cross-attention has none.

Step-by-step decoding (``prefill`` then ``step``): the encoder runs once; each decoder layer keeps the keys and values
of the memory (cross-attention, computed once) and of the target tokens so far (self-attention, one more per step).
The state after S source and T target tokens is n_decoder_layers x 2 x (S + T) x n_heads x d_head values per
sequence. A Switch layer's capacity is per call (``SwitchFFN.capacity``): a step's one token is never dropped, so
decoding equals the teacher-forced forward where that forward dropped no token (as in ``transformers``' Switch).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .enc_attention import MultiHeadAttention, RelativePositionBias
from .encoder import EncoderConfig, EncoderStack, TokenEmbedding, make_ffn, make_norm, ParamCounts, residual

KV = tuple[torch.Tensor, torch.Tensor]  # keys and values, each (B, H, positions, Dh)


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
        return self.extend(x, self.cross_attn.kv(memory), None, position_bias)[0]

    def extend(self, x: torch.Tensor, cross_kv: KV, self_kv: KV | None, position_bias: torch.Tensor | None
               ) -> tuple[torch.Tensor, KV]:
        """x (B, T, D): T new target tokens after the cached ones (self_kv: two (B, H, t, Dh), or None) -> the
        layer's output (B, T, D) and the self-attention cache extended by them (B, H, t + T, Dh)."""
        cache: dict[str, KV] = {}

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            k, v = self.self_attn.kv(h)  # (B, H, T, Dh) each
            if self_kv is not None:
                k, v = torch.cat([self_kv[0], k], dim=2), torch.cat([self_kv[1], v], dim=2)  # (B, H, t + T, Dh)
            cache["kv"] = (k, v)
            return self.self_attn.attend(h, k, v, causal=True, position_bias=position_bias)

        x = residual(x, self_attention, self.norm1, self.pre_norm)
        x = residual(x, lambda h: self.cross_attn.attend(h, *cross_kv), self.norm2, self.pre_norm)
        return residual(x, self.ffn, self.norm3, self.pre_norm), cache["kv"]


class DecoderStack(nn.Module):
    """(B, T, D) target states and (B, S, D) memory -> (B, T, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_decoder_layers))
        self.relative = (RelativePositionBias(cfg.n_heads, cfg.relative_buckets, cfg.relative_max_distance, False)
                         if cfg.positions == "relative" else None)
        self.final_norm = make_norm(cfg) if cfg.final_norm else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.extend(x, self.cross_kv(memory), [None] * len(self.layers), 0)[0]

    def cross_kv(self, memory: torch.Tensor) -> list[KV]:
        """Every layer's cross-attention keys and values of memory (B, S, D): computed once per source."""
        return [layer.cross_attn.kv(memory) for layer in self.layers]

    def extend(self, x: torch.Tensor, cross: list[KV], caches: list[KV | None], start: int
               ) -> tuple[torch.Tensor, list[KV]]:
        """x (B, T, D): target tokens at positions start..start+T-1 -> (B, T, D) and every layer's extended cache."""
        T = x.shape[1]
        bias = self.relative(T, start + T, x.device, query_start=start) if self.relative is not None else None
        new = []
        for layer, cross_kv, cache in zip(self.layers, cross, caches):
            x, kv = layer.extend(x, cross_kv, cache, bias)
            new.append(kv)
        return (self.final_norm(x) if self.final_norm is not None else x), new


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
        return self._logits(self.decoder(self.embed(tgt), self.encode(src)))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return self.head(h)
        if self.cfg.rescale_tied_head:  # T5 (its embeddings are not scaled)
            h = h * self.cfg.d_model ** -0.5
        return F.linear(h, self.embed.tokens.weight)  # (B, T, V)

    # ---- step-by-step decoding: the state is returned, never mutated ------------------------------------------
    def prefill(self, src: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """src (B, S), target prefix tgt (B, T) -> logits (B, T, V) (as ``forward``) and the decode state."""
        cross = self.decoder.cross_kv(self.encode(src))
        h, caches = self.decoder.extend(self.embed(tgt), cross, [None] * len(cross), 0)
        return self._logits(h), {"pos": tgt.shape[1], "cross": cross, "self": caches}

    def step(self, token: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """token (B,) -> logits (B, V) of the next target token, and the new state."""
        x = self.embed(token[:, None], start=state["pos"])  # (B,) -> (B, 1, D)
        h, caches = self.decoder.extend(x, state["cross"], state["self"], state["pos"])
        return self._logits(h)[:, 0], {"pos": state["pos"] + 1, "cross": state["cross"], "self": caches}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype, src_len: int | None = None) -> int:
        """Decode state after src_len source tokens (default seq_len) and seq_len target tokens: per decoder layer,
        keys and values of both."""
        cfg = self.cfg
        d_head = cfg.d_head or cfg.d_model // cfg.n_heads
        S = seq_len if src_len is None else src_len
        per_token = 2 * cfg.n_heads * d_head * torch.empty((), dtype=dtype).element_size()
        return cfg.n_decoder_layers * batch * (S + seq_len) * per_token

    @property
    def aux_loss(self) -> torch.Tensor:
        from .switch_moe import SwitchFFN

        losses = [m.aux_loss for m in self.modules() if isinstance(m, SwitchFFN)]
        return sum(losses, torch.zeros(())) / max(len(losses), 1)
