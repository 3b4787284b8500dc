"""A generic decoder-only language model that takes any registered mixer by name.

token embedding (+ positions) -> n_layers x [x + mixer(norm(x)); x + ffn(norm(x))] -> final norm -> tied head.
Positions are the mixer's business where the method has its own (RoPE, relative positions, decays, convolutions:
``spec.positions == "own"``); for methods that know nothing but causality (kernel attention, LSH, routing,
Linformer: ``"absolute"``) the backbone adds sinusoidal absolute positions, as those papers' models do. Decoding runs
the mixers' ``step`` with one state per layer and the position counter.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .mixer import State
from .registry import create_mixer, get_mixer


@dataclass
class LMConfig:
    mixer: str = "standard"  # registry name of the sequence mixer used in every block
    mixer_hparams: dict[str, Any] = field(default_factory=dict)  # forwarded to the mixer's constructor
    impl: str | None = None  # mixer impl; None = the spec's default
    vocab_size: int = 256  # bytes: no tokenizer to download
    d_model: int = 128  # residual stream width
    n_layers: int = 2  # number of (mixer, FFN) blocks
    n_heads: int = 4  # heads of the mixer
    norm: str = "rmsnorm"  # "rmsnorm" (LLaMA) or "layernorm" (GPT-2): plain choices, same cost
    ffn: str = "swiglu"  # "swiglu" (LLaMA), "gelu" (GPT-2 MLP) or "none" (mixer-only blocks, as Zoology's MQAR models)
    ffn_mult: float = 4.0  # hidden width / d_model; SwiGLU uses 2/3 of it so both have ~ the same parameters
    causal: bool = True  # False builds an encoder (masked-LM), for bidirectional-only mixers
    pos_emb: str = "auto"  # "auto" (from the mixer's spec.positions), "none", "sinusoidal" or "learned" (absolute, added)
    max_positions: int = 4096  # rows of the learned position table (GPT-2's wpe); positions past it are an error
    # recompute each block's activations in the backward pass instead of storing them (training memory vs time)
    activation_checkpointing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(dim)
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    raise ValueError(f"unknown norm {kind!r}; expected 'rmsnorm' or 'layernorm'")


class GeluMLP(nn.Module):
    def __init__(self, dim: int, mult: float):
        super().__init__()
        hidden = int(mult * dim)
        self.up, self.down = nn.Linear(dim, hidden, bias=False), nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mult: float):
        super().__init__()
        hidden = int(2 * mult * dim / 3)
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def sinusoidal_positions(positions: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Vaswani et al.'s PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...): (T,) -> (T, dim), built in
    ``dtype`` (pass the promoted dtype of the activations: fp64 runs get an fp64 table)."""
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, device=positions.device, dtype=dtype) / dim)
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]  # (T, dim/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, dim/2, 2) -> (T, dim): interleaved
    return pe[:, :dim]


def make_ffn(kind: str, dim: int, mult: float) -> nn.Module | None:
    if kind == "swiglu":
        return SwiGLU(dim, mult)
    if kind == "gelu":
        return GeluMLP(dim, mult)
    if kind == "none":
        return None
    raise ValueError(f"unknown ffn {kind!r}; expected 'swiglu', 'gelu' or 'none'")


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.d_model)
        self.mixer = create_mixer(cfg.mixer, cfg.d_model, cfg.n_heads, causal=cfg.causal, impl=cfg.impl,
                                  **cfg.mixer_hparams)
        self.ffn = make_ffn(cfg.ffn, cfg.d_model, cfg.ffn_mult)
        self.norm2 = make_norm(cfg.norm, cfg.d_model) if self.ffn is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x)) if self.ffn is not None else x

    def extend(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x: (B, T, D) new positions after the cached ones (mixers with ``extend``: standard, alibi)."""
        y, state = self.mixer.extend(self.norm1(x), state)
        x = x + y
        return (x + self.ffn(self.norm2(x)) if self.ffn is not None else x), state

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, state = self.mixer.step(self.norm1(x_t), state)
        x_t = x_t + y
        return (x_t + self.ffn(self.norm2(x_t)) if self.ffn is not None else x_t), state


class DecoderLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.pos_emb == "auto":
            self.pos_emb = "sinusoidal" if get_mixer(cfg.mixer).spec.positions == "absolute" else "none"
        elif cfg.pos_emb in ("none", "sinusoidal", "learned"):
            self.pos_emb = cfg.pos_emb
        else:
            raise ValueError(f"unknown pos_emb {cfg.pos_emb!r}; expected 'auto', 'none', 'sinusoidal' or 'learned'")
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # GPT-2's learned absolute positions: rows past the training length stay at their random initialisation
        self.pos_table = nn.Embedding(cfg.max_positions, cfg.d_model) if self.pos_emb == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith(("wo.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        for block in self.blocks:  # what the generic init above must not overwrite (e.g. Mamba's dt projection)
            block.mixer.reset_special_parameters()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        x = self.embed(tokens)  # (B, T, D) or (B, D)
        if self.pos_emb == "sinusoidal":
            T = tokens.shape[1] if tokens.dim() == 2 else 1
            pe = sinusoidal_positions(torch.arange(start, start + T, device=tokens.device), self.cfg.d_model,
                                      torch.promote_types(x.dtype, torch.float32))
            # scaled to the token embeddings' initial size (std 0.02; sin^2 and cos^2 average 1/2)
            pe = (0.02 * math.sqrt(2.0) * pe).to(x.dtype)
            x = x + (pe if tokens.dim() == 2 else pe[0])
        elif self.pos_emb == "learned":
            T = tokens.shape[1] if tokens.dim() == 2 else 1
            if start + T > self.cfg.max_positions:
                raise ValueError(f"position {start + T - 1} is past the learned table (max_positions="
                                 f"{self.cfg.max_positions})")
            pe = self.pos_table(torch.arange(start, start + T, device=tokens.device))  # (T, D)
            x = x + (pe if tokens.dim() == 2 else pe[0])
        return x

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) int64 -> final normalised hidden states (B, T, D), before the head."""
        x = self._embed(tokens, 0)  # (B, T, D)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)  # keeps only the block's input for backward
            else:
                x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) int64 -> logits (B, T, vocab). The head is tied to the embedding."""
        return F.linear(self.hidden(tokens), self.embed.weight)

    def init_state(self, batch: int) -> dict[str, Any]:
        return {"pos": 0, "layers": [block.mixer.init_state(batch) for block in self.blocks]}

    def step(self, token: torch.Tensor, states: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """token: (B,) -> logits (B, vocab) for the next token, and the new state (position, per-layer states)."""
        x = self._embed(token, states["pos"])  # (B, D)
        new_layers = []
        for block, state in zip(self.blocks, states["layers"]):
            x, state = block.step(x, state)
            new_layers.append(state)
        return F.linear(self.norm(x), self.embed.weight), {"pos": states["pos"] + 1, "layers": new_layers}

    def extend(self, tokens: torch.Tensor, states: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """tokens: (B, T) following the decoded ones -> logits (B, T, vocab) and the new state: T steps at once
        (speculative decoding verifies a draft this way). Needs mixers with ``extend``."""
        x = self._embed(tokens, states["pos"])  # (B, T, D)
        new_layers = []
        for block, state in zip(self.blocks, states["layers"]):
            x, state = block.extend(x, state)
            new_layers.append(state)
        T = tokens.shape[1]
        return F.linear(self.norm(x), self.embed.weight), {"pos": states["pos"] + T, "layers": new_layers}

    def truncate(self, states: dict[str, Any], length: int) -> dict[str, Any]:
        """The state after the first ``length`` tokens (roll back a rejected draft; KV-cache mixers only)."""
        return {"pos": length, "layers": [block.mixer.truncate(s, length) for block, s in zip(self.blocks,
                                                                                             states["layers"])]}
