"""ViT-B/16 (Dosovitskiy et al. 2020): patch embedding, a learned [CLS] token and learned positions, a pre-norm
encoder stack, a final LayerNorm and a linear classifier on [CLS].

Parameter convention: as Hugging Face's ``ViTForImageClassification`` (1000 ImageNet classes); ``n_classes=0`` is
``ViTModel`` with its pooler. Published "86M" (ViT paper, Table 1: ViT-Base 86M), the backbone without a head.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..spec import Paper
from .encoder import EncoderConfig, EncoderStack, ParamCounts
from .patch_embedding import PatchEmbedding
from .registry import ModelPreset, register_model


class VisionTransformer(ParamCounts, nn.Module):
    """images (B, C, H, W) -> class logits (B, n_classes), or with n_classes=0 the pooled [CLS] (B, D)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.patches = PatchEmbedding(cfg.image_size, cfg.patch_size, cfg.n_channels, cfg.d_model)
        self.n_positions = self.patches.n_patches + 1  # tokens the encoder sees: patches and [CLS]
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.positions = nn.Parameter(torch.zeros(1, self.n_positions, cfg.d_model))
        self.encoder = EncoderStack(dataclasses.replace(cfg, final_norm=True))
        if cfg.n_classes:
            self.classifier = nn.Linear(cfg.d_model, cfg.n_classes)
        else:
            self.pooler = nn.Linear(cfg.d_model, cfg.d_model)

    def hidden(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patches(images)  # (B, N, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.positions  # (B, N + 1, D)
        return self.encoder(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cls = self.hidden(images)[:, 0]  # (B, D)
        return self.classifier(cls) if self.cfg.n_classes else torch.tanh(self.pooler(cls))

    @property
    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())


VIT_B16 = EncoderConfig(d_model=768, n_layers=12, n_heads=12, d_ff=3072, pre_norm=True, positions="none",
                        type_vocab_size=0, embed_norm=False, final_norm=True, head="none",
                        image_size=224, patch_size=16, n_channels=3, n_classes=1000)
# CPU-sized: 32x32 images in 8x8 patches (16 patches + [CLS]), 2 layers of width 64, 10 classes
VIT_TINY = dataclasses.replace(VIT_B16, d_model=64, n_layers=2, n_heads=4, d_ff=256, image_size=32, patch_size=8,
                               n_classes=10)


def vit_hf_config(cfg: EncoderConfig):
    from transformers import ViTConfig

    return ViTConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                     intermediate_size=cfg.d_ff, hidden_act=cfg.activation, layer_norm_eps=cfg.norm_eps,
                     image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.n_channels,
                     qkv_bias=cfg.bias, num_labels=max(cfg.n_classes, 1), hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


@register_model("vit-b16")
def vit_b16() -> ModelPreset:
    return ModelPreset(
        family="ViT", paper=Paper("An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
                                  "2010.11929", 2020),
        kind="vision", stack=VisionTransformer, full=VIT_B16, tiny=VIT_TINY,
        published={"params": 86e6},  # ViT paper, Table 1: ViT-Base, 86M
        hf_config=vit_hf_config,
        notes="1000-class head (ViTForImageClassification); n_classes=0 is ViTModel with its pooler")
