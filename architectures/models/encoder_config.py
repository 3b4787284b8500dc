"""The encoder family's config and its position-wise FFN (``EncoderConfig``, ``FeedForward``, ``make_norm``), apart
from the stacks so that the FFN variants (``switch_moe``) can build on them without importing the stacks back.
Re-exported by ``architectures.models.encoder``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import RMSNorm

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522  # tokens (BERT's WordPiece); ViT ignores it
    d_model: int = 768  # residual width
    n_layers: int = 12  # encoder layers
    n_decoder_layers: int = 0  # decoder layers of an encoder-decoder (0: encoder only)
    n_heads: int = 12  # attention heads
    d_head: int | None = None  # per-head width (T5's d_kv); None = d_model / n_heads
    d_ff: int = 3072  # FFN hidden width
    activation: str = "gelu"  # FFN nonlinearity: BERT/ViT "gelu" (erf), Vaswani/T5 v1.0 "relu"
    norm: str = "layer"  # "layer" (LayerNorm with bias) or "rms" (T5's scale-only RMS norm)
    norm_eps: float = 1e-12  # BERT and ViT 1e-12, T5 1e-6, Transformer-base 1e-5
    pre_norm: bool = False  # norm before each branch (T5, ViT) or after each residual sum (Vaswani, BERT)
    bias: bool = True  # biases in the attention and FFN linears (T5 has none)
    scaled: bool = True  # scores scaled by 1/sqrt(d_head) (T5 folds the scale into its initialisation: False)
    # "learned" table, "sinusoidal" (Vaswani), "relative" (T5 buckets) or "none" (ViT adds its own)
    positions: str = "learned"
    max_seq_len: int = 512  # rows of a learned position table
    position_offset: int = 0  # first position id (RoBERTa: padding_idx + 1 = 2, so its table has 514 rows)
    type_vocab_size: int = 2  # BERT's segment embeddings (RoBERTa 1: one unused segment; 0: none)
    embed_norm: bool = True  # a norm right after the embeddings (BERT) - post-norm stacks need it
    final_norm: bool = False  # a norm after the last layer (pre-norm stacks: T5, ViT)
    relative_buckets: int = 32  # T5: buckets of the relative position bias
    relative_max_distance: int = 128  # T5: distances beyond share the last bucket
    head: str = "mlm"  # encoder: "mlm" (transform + tied decoder + bias), "pooler" (BERT's tanh dense on [CLS]), "none"
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (Vaswani)
    tie_embeddings: bool = True  # output head shares the token embedding
    rescale_tied_head: bool = False  # T5: the tied head's input is multiplied by d_model^-0.5
    ffn_pattern: tuple[str, ...] = ("dense",)  # per-layer FFN kind, cyclic: Switch ("dense", "moe")
    n_experts: int = 0  # Switch: experts per MoE layer
    capacity_factor: float = 1.0  # Switch: expert capacity = factor x tokens / experts (tokens over it pass through)
    router_jitter: float = 0.0  # Switch: multiplicative input noise of the router while training (0: off)
    image_size: int = 224  # ViT: input height = width
    patch_size: int = 16  # ViT: square patches
    n_channels: int = 3  # ViT: input channels
    n_classes: int = 1000  # ViT: classifier outputs (0: ViTModel's pooler instead)

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    def layer_mixers(self) -> list[str]:
        """Per layer, encoder then decoder: the attention each runs (as DecoderConfig.layer_mixers lists mixers)."""
        return ["self-attention"] * self.n_layers + ["self+cross-attention"] * self.n_decoder_layers

    def layer_ffns(self) -> list[str]:
        """Per layer, encoder then decoder: "dense" or "moe" (ffn_pattern repeated)."""
        p = self.ffn_pattern
        return [p[i % len(p)] for i in range(self.n_layers)] + [p[i % len(p)] for i in range(self.n_decoder_layers)]


def make_norm(cfg: EncoderConfig) -> nn.Module:
    if cfg.norm == "layer":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
    if cfg.norm == "rms":
        return RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    raise ValueError(f"unknown norm {cfg.norm!r}; expected 'layer' or 'rms'")


class FeedForward(nn.Module):
    """The position-wise FFN of Vaswani et al.: down(act(up(x)))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {cfg.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[cfg.activation]
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))
