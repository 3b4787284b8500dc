"""The Switch Transformer FFN (Fedus et al. 2021): a top-1 router over n_experts FFNs with an expert capacity.

    probs = softmax(router(x))  (fp32)      expert(t) = argmax probs[t]      gate(t) = probs[t, expert(t)]
    y[t]  = gate(t) * FFN_expert(t)(x[t])   for the first C tokens of a sequence routed to each expert,
    y[t]  = 0 for the tokens over capacity  (they pass through the residual unchanged)
    C     = ceil(capacity_factor * T / n_experts)

Dispatch keeps static shapes (every expert processes exactly C slots, gathered by ``topk`` over the token order), so
the layer runs on the meta device and the FLOP counter sees what a capacity-bounded implementation computes:
capacity_factor x T expert evaluations. ``aux_loss`` is the paper's load-balancing loss, n_experts * sum_e f_e P_e
(f_e: fraction of tokens routed to e, P_e: mean router probability of e), of the last forward.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .encoder_config import EncoderConfig, FeedForward


class SwitchFFN(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.n_experts < 1:
            raise ValueError(f"an MoE layer needs n_experts >= 1, got {cfg.n_experts}")
        self.n_experts, self.capacity_factor, self.jitter = cfg.n_experts, cfg.capacity_factor, cfg.router_jitter
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(cfg) for _ in range(cfg.n_experts))
        self.aux_loss = torch.zeros(())

    def inactive_params(self) -> int:
        """Parameters a token does not use: every expert but its one."""
        return (self.n_experts - 1) * sum(p.numel() for p in self.experts[0].parameters())

    def capacity(self, T: int) -> int:
        return min(T, math.ceil(self.capacity_factor * T / self.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        h = x * torch.empty_like(x).uniform_(1 - self.jitter, 1 + self.jitter) if self.training and self.jitter else x
        probs = self.router(h).float().softmax(dim=-1)  # (B, T, E)
        gate, expert = probs.max(dim=-1)  # (B, T)
        routed = nn.functional.one_hot(expert, self.n_experts).to(probs.dtype)  # (B, T, E)
        self.aux_loss = self.n_experts * (routed.mean(dim=(0, 1)) * probs.mean(dim=(0, 1))).sum()
        C = self.capacity(T)
        order = torch.arange(T, 0, -1, device=x.device, dtype=probs.dtype)  # earlier tokens first: T, T-1, ..., 1
        priority, slots = (routed * order[None, :, None]).topk(C, dim=1)  # (B, C, E): the first C routed tokens
        valid = (priority > 0).to(x.dtype)  # slots that hold a routed token (the others are padding)
        y = torch.zeros_like(x)
        for e, ffn in enumerate(self.experts):
            idx = slots[:, :, e]  # (B, C)
            xe = x.gather(1, idx[..., None].expand(B, C, D))  # (B, C, D)
            w = (gate.gather(1, idx).to(x.dtype) * valid[:, :, e])[..., None]  # (B, C, 1)
            y = y.scatter_add(1, idx[..., None].expand(B, C, D), ffn(xe) * w)
        return y
