"""Mixture-of-experts FFN: a top-k router, routed experts, optional shared experts, the load-balancing loss and an
optional expert capacity.

Router (``TopKRouter``), from the token's hidden state x (D) and a weight W_r (E x D), logits l = W_r x:

- ``score="softmax"``: p = softmax(l) over all E experts, the top k by p; weights p_topk, divided by their sum when
  ``norm_topk`` (Mixtral: the same as a softmax over the top-k logits) or kept as they are (Jamba, Switch);
- ``score="sigmoid"``: s = sigmoid(l) (DeepSeek-V3, Kimi Linear). Selection uses s + b, b a per-expert bias buffer
  that DeepSeek's auxiliary-loss-free balancing adjusts outside gradient descent, restricted to the ``topk_groups``
  best of ``n_groups`` expert groups (a group scores the sum of its two best experts); the weights are the selected
  s (not s + b), divided by their sum when ``norm_topk``, times ``routed_scale``.

Experts are SwiGLU (or a plain activation) MLPs of hidden width d_expert, stored stacked: (E, d_expert, D) weights.
The output is sum_k weight_k * expert_k(x) + shared(x), shared an MLP of width n_shared * d_expert (DeepSeek).

Load-balancing loss (Switch Transformer eq. 4, Mixtral's, counted over the k choices): E * sum_e f_e * P_e, f_e the
fraction of the N*k assignments that went to expert e, P_e the mean router probability of e (sigmoid scores are
normalised per token first). It is 1 for perfectly uniform routing and E when every token picks the same experts.

Capacity (Switch Transformer): with ``capacity_factor`` c, each expert takes at most ceil(c * N * k / E) of the N
tokens of the batch, in token order; assignments past that are dropped (the token gets nothing from that expert; the
residual carries it). Capacity makes a token's output depend on other tokens, later ones included, so it breaks
causality and decode == forward: it is a training device, None (no dropping, Hugging Face's inference) in presets.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import ACTIVATIONS, DenseFFN


class TopKRouter(nn.Module):
    def __init__(self, d_model: int, n_experts: int, top_k: int, *, score: str = "softmax", norm_topk: bool = True,
                 routed_scale: float = 1.0, n_groups: int = 1, topk_groups: int = 1, score_bias: bool = False):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"need 1 <= top_k <= n_experts, got top_k={top_k}, n_experts={n_experts}")
        if score not in ("softmax", "sigmoid"):
            raise ValueError(f"router score must be 'softmax' or 'sigmoid', got {score!r}")
        if n_experts % n_groups or not 1 <= topk_groups <= n_groups:
            raise ValueError(f"n_experts={n_experts} must split into n_groups={n_groups} >= topk_groups={topk_groups}")
        self.n_experts, self.top_k, self.score, self.norm_topk = n_experts, top_k, score, norm_topk
        self.routed_scale, self.n_groups, self.topk_groups = routed_scale, n_groups, topk_groups
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))
        nn.init.normal_(self.weight, std=0.02)
        # DeepSeek-V3's selection bias: a buffer (not trained by gradients, not a parameter), as in Hugging Face
        self.register_buffer("score_bias", torch.zeros(n_experts) if score_bias else None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, D) -> probabilities (N, E) fp32, weights (N, k) fp32, expert indices (N, k)."""
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 as every reference router (fp64 stays fp64)
        logits = F.linear(x.to(dtype), self.weight.to(dtype))  # (N, E)
        if self.score == "softmax":
            probs = logits.softmax(-1)
            weights, idx = probs.topk(self.top_k, dim=-1)
        else:
            probs = logits.sigmoid()
            choice = probs if self.score_bias is None else probs + self.score_bias.to(dtype)
            if self.n_groups > 1:
                groups = choice.view(-1, self.n_groups, self.n_experts // self.n_groups)  # (N, G, E/G)
                best = groups.topk(min(2, groups.shape[-1]), dim=-1)[0].sum(-1).topk(self.topk_groups, dim=-1)[1]
                keep = torch.zeros_like(groups[..., 0], dtype=torch.bool).scatter_(1, best, True)  # (N, G)
                choice = choice.masked_fill(~keep[..., None].expand_as(groups).reshape_as(choice), float("-inf"))
            idx = choice.topk(self.top_k, dim=-1)[1]
            weights = probs.gather(1, idx)
            probs = probs / probs.sum(-1, keepdim=True)  # for the balancing loss
        if self.norm_topk:
            weights = weights / (weights.sum(-1, keepdim=True) + (1e-20 if self.score == "sigmoid" else 0.0))
        return probs, weights * self.routed_scale, idx


class MoE(nn.Module):
    def __init__(self, d_model: int, d_expert: int, n_experts: int, top_k: int, *, n_shared: int = 0,
                 act: str = "swiglu", capacity_factor: float | None = None, **router_kw):
        super().__init__()
        if act != "swiglu" and act not in ACTIVATIONS:
            raise ValueError(f"unknown expert activation {act!r}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive or None, got {capacity_factor}")
        self.d_model, self.d_expert, self.n_experts, self.top_k = d_model, d_expert, n_experts, top_k
        self.act, self.capacity_factor = act, capacity_factor
        self.router = TopKRouter(d_model, n_experts, top_k, **router_kw)
        std = 0.02
        self.w_gate = nn.Parameter(torch.randn(n_experts, d_expert, d_model) * std) if act == "swiglu" else None
        self.w_up = nn.Parameter(torch.randn(n_experts, d_expert, d_model) * std)  # (E, F, D)
        self.w_down = nn.Parameter(torch.randn(n_experts, d_model, d_expert) * std)  # (E, D, F)
        self.shared = DenseFFN(d_model, n_shared * d_expert, "swiglu") if n_shared else None
        self.aux_loss = torch.zeros(())  # load-balancing loss of the last forward
        self.dropped_fraction = 0.0  # share of assignments dropped by capacity in the last forward

    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        return (3 if self.w_gate is not None else 2) * self.d_model * self.d_expert

    def inactive_params(self) -> int:
        """Parameters a token does not use: the routed experts it is not sent to."""
        return (self.n_experts - self.top_k) * self.expert_params()

    def capacity(self, n_tokens: int) -> int | None:
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * n_tokens * self.top_k / self.n_experts)

    def _expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.w_up[e])  # (n, F)
        h = F.silu(F.linear(x, self.w_gate[e])) * h if self.w_gate is not None else ACTIVATIONS[self.act](h)
        return F.linear(h, self.w_down[e])  # (n, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., D) -> (..., D)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        probs, weights, idx = self.router(flat)
        keep = self._capacity_mask(idx)  # (N, k) bool
        out = torch.zeros_like(flat)
        if flat.is_meta:  # no values to route by: a balanced assignment, so FLOP counting on meta sees k experts/token
            return self._meta_forward(flat, out).view(shape)
        for e in range(self.n_experts):
            tok, slot = torch.nonzero((idx == e) & keep, as_tuple=True)
            if tok.numel():
                y = self._expert(e, flat[tok]) * weights[tok, slot, None].to(flat.dtype)
                out = out.index_add(0, tok, y)
        if self.shared is not None:
            out = out + self.shared(flat)
        counts = F.one_hot(idx, self.n_experts).sum((0, 1)).float()  # (E,) assignments per expert
        self.aux_loss = self.n_experts * (counts / idx.numel() * probs.mean(0)).sum()
        self.dropped_fraction = 1.0 - keep.float().mean().item() if keep.numel() and not x.is_meta else 0.0
        return out.view(shape)

    def _meta_forward(self, flat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """On the meta device (shapes only): expert e gets its share of the N * k assignments (balanced routing), so
        FlopCounterMode counts what a token costs: k routed experts, the shared ones and the router."""
        n_assign = flat.shape[0] * self.top_k
        for e in range(self.n_experts):
            n = n_assign // self.n_experts + (1 if e < n_assign % self.n_experts else 0)
            if n:
                out = out.index_add(0, torch.arange(n, device=flat.device) % flat.shape[0], self._expert(e, flat[:n]))
        self.aux_loss = torch.zeros((), device=flat.device)
        return out + self.shared(flat) if self.shared is not None else out

    def _capacity_mask(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, k) expert indices -> which assignments fit in their expert's capacity (first come, by token order)."""
        cap = self.capacity(idx.shape[0])
        if cap is None:
            return torch.ones_like(idx, dtype=torch.bool)
        onehot = F.one_hot(idx, self.n_experts)  # (N, k, E)
        order = onehot.flatten(0, 1).cumsum(0).view_as(onehot)  # rank of each assignment within its expert, token-major
        return ((order * onehot).sum(-1) <= cap)
