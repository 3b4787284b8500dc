"""RWKV's channel mixing (Peng et al. 2023/2024), the FFN of RWKV blocks: a token shift (each position mixes in the
previous position's input) followed by a squared-ReLU MLP gated by a sigmoid "receptance":

    xk = x + (x_prev - x) * mu_k,  xr = x + (x_prev - x) * mu_r
    out = sigmoid(W_r xr) * W_v relu(W_k xk)^2

It is the only stateful FFN: decoding carries the previous position's input (B, D).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelMix(nn.Module):
    stateful = True

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        ddd = torch.arange(d_model, dtype=torch.float32) / d_model
        self.mu_k = nn.Parameter(1.0 - ddd ** 0.5)  # RWKV-LM x060 init for a middle layer
        self.mu_r = nn.Parameter(1.0 - ddd ** 0.5)
        self.key = nn.Linear(d_model, d_ff, bias=False)
        self.value = nn.Linear(d_ff, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)

    def _mix(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        xk = x + (x_prev - x) * self.mu_k
        xr = x + (x_prev - x) * self.mu_r
        return torch.sigmoid(self.receptance(xr)) * self.value(F.relu(self.key(xk)).square())

    def prefill(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D) -> (y (B, T, D), the last input (B, D))."""
        first = x.new_zeros(x.shape[0], 1, x.shape[2]) if state is None else state[:, None]
        x_prev = torch.cat([first, x[:, :-1]], dim=1)  # (B, T, D): the token shift
        return self._mix(x, x_prev), x[:, -1].clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def init_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.receptance.in_features, device=self.mu_k.device, dtype=self.mu_k.dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mix(x_t, state), x_t

    def state_bytes(self, batch: int, dtype: torch.dtype) -> int:
        return batch * self.receptance.in_features * dtype.itemsize
