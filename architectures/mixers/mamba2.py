"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", arXiv:2405.21060), the Mamba-2 block of Section 7.1 / Fig. 6:

    z, xBC, dt = in_proj(u)               all projections computed in parallel at the start of the block:
                                          z, x: (B, T, E) with E = expand * d_model; B, C: (B, T, G, N); dt: (B, T, H)
    x, B, C = split(SiLU(causal depthwise conv1d(xBC)))     one short conv over x, B and C together
    dt   = softplus(dt + dt_bias)          one step size per head
    y    = SSD(x, dt, A = -exp(A_log), B, C) + D * x       A and D: one scalar per head (``ops.ssd``)
    y    = RMSNorm(y * SiLU(z)) per group  the extra normalisation before the output projection (gated RMSNorm)
    out  = out_proj(y)

Heads: ``n_heads`` is the number of SSM heads H, with head dim P = E / H (64 at d_model 128, expand 2, 4 heads, as in
the paper); B and C are shared by the H / G heads of each of ``n_groups`` groups (G = 1: multi-value attention).
Decoding keeps the last d_conv - 1 conv inputs (of x, B and C) and the (H, P, N) SSM state.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.precision import upcast
from ..ops.ssd import chunk_ssd, naive_ssd, ssd_step
from ..registry import register_mixer
from ..spec import MixerSpec, Paper
from .mamba import inverse_softplus


@register_mixer("mamba2", spec=MixerSpec(
    family="state space",
    paper=Paper("Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space "
                "Duality", "2405.21060", 2024),
    claimed_time="O(n)", claimed_memory="O(n)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality=None,
    claim_source="the paper (guide 003 lists Mamba-2, 'structured state space duality', in its family tree, and "
                 "'Mamba, RWKV: linear complexity' in its Quick Comparison, without a table row): the SSD algorithm "
                 "is linear in sequence length in time and memory (Section 6), and decodes with a constant state",
    modes=frozenset({"causal", "decode"}),
    impls=("torch",),
    default_hparams={"d_state": 64, "d_conv": 4, "expand": 2, "n_groups": 1, "chunk_size": 32},
    test_hparams={"d_state": 16, "expand": 1, "chunk_size": 16},
    notes="chunk_size 32 was the fastest of 8..128 in single-thread CPU timings at T=4096 (GPU kernels use 256). "
          "The guide's Master Comparison Table does not list Mamba-2.",
))
class Mamba2(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 d_state: int = 64, d_conv: int = 4, expand: int = 2, n_groups: int = 1, chunk_size: int = 32):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if min(d_state, d_conv, expand, n_groups, chunk_size) < 1:
            raise ValueError("d_state, d_conv, expand, n_groups and chunk_size must be >= 1")
        if n_heads % n_groups:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_groups={n_groups}")
        self.d_state, self.d_conv, self.expand, self.n_groups, self.chunk_size = d_state, d_conv, expand, n_groups, \
            chunk_size
        E = expand * d_model
        self.d_inner, self.P = E, E // n_heads
        self.conv_dim = E + 2 * n_groups * d_state
        self.in_proj = nn.Linear(d_model, E + self.conv_dim + n_heads, bias=False)  # [z, xBC, dt]
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True)
        dt = torch.exp(torch.rand(n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(inverse_softplus(dt))  # softplus(dt_bias) starts in [1e-3, 0.1], log-uniform
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))  # A in [-16, -1]
        self.D = nn.Parameter(torch.ones(n_heads))
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.norm_eps = 1e-5
        self.wo = nn.Linear(E, d_model, bias=False)

    # ---- the layer --------------------------------------------------------------------------------------------
    @staticmethod
    def _w(p: torch.Tensor, fp32: bool) -> torch.Tensor:
        return p.float() if fp32 else p

    def _split(self, xBC: torch.Tensor):
        """(..., conv_dim) -> x: (..., H, P), B, C: (..., G, N)."""
        G, N = self.n_groups, self.d_state
        x, B, C = xBC.split([self.d_inner, G * N, G * N], dim=-1)
        return (x.unflatten(-1, (self.n_heads, self.P)), B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N)))

    def _dt_A(self, dt: torch.Tensor, fp32: bool):
        f = torch.promote_types(self.A_log.dtype, torch.float32)
        return F.softplus(dt + self._w(self.dt_bias, fp32)), -torch.exp(self.A_log.to(f))

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor, fp32: bool) -> torch.Tensor:
        """RMSNorm(y * SiLU(z)) over each group of E / G channels, in at least fp32. y, z: (..., E)."""
        g = (upcast(y) * F.silu(upcast(z))).unflatten(-1, (self.n_groups, -1))  # (..., G, E / G)
        g = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.norm_eps)).flatten(-2)
        return (g.to(y.dtype) if not fp32 else g) * self._w(self.norm_weight, fp32)

    def _run(self, u: torch.Tensor, state: State | None, scan, fp32: bool = False) -> tuple[torch.Tensor, State]:
        if fp32:
            u = u.float()
        batch, T, _ = u.shape
        z, xBC, dt = F.linear(u, self._w(self.in_proj.weight, fp32)).split(
            [self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        history = state["conv"] if state else u.new_zeros(batch, self.conv_dim, self.d_conv - 1)
        window = torch.cat([history.to(xBC.dtype), xBC.transpose(1, 2)], dim=-1)  # (B, conv_dim, d_conv - 1 + T)
        xBC = F.silu(F.conv1d(window, self._w(self.conv1d.weight, fp32), self._w(self.conv1d.bias, fp32),
                              groups=self.conv_dim)).transpose(1, 2)  # (B, T, conv_dim)
        x, B, C = self._split(xBC)
        dt, A = self._dt_A(dt, fp32)
        y, h = scan(x, dt, A, B, C, self._w(self.D, fp32), initial_state=state["ssm"] if state else None)
        y = self._gated_norm(y.reshape(batch, T, self.d_inner), z, fp32)  # (B, T, H, P) -> (B, T, E)
        y = F.linear(y, self._w(self.wo.weight, fp32))
        new_state = {"conv": window[:, :, window.shape[-1] - (self.d_conv - 1):].clone(), "ssm": h.to(u.dtype)}
        return y, new_state

    def _fast_scan(self, x, dt, A, B, C, D, initial_state=None):
        return chunk_ssd(x, dt, A, B, C, D, initial_state=initial_state, chunk_size=self.chunk_size)

    # ---- the contract -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self._run(x, None, self._fast_scan)

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"conv": torch.zeros(batch, self.conv_dim, self.d_conv - 1, **kw),
                "ssm": torch.zeros(batch, self.n_heads, self.P, self.d_state, **kw)}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        z, xBC, dt = self.in_proj(x_t).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        window = torch.cat([state["conv"], xBC[:, :, None]], dim=-1)  # (B, conv_dim, d_conv)
        xBC = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)  # (B, conv_dim)
        x, B, C = self._split(xBC)
        dt, A = self._dt_A(dt, fp32=False)
        y, h = ssd_step(x, dt, A, B, C, self.D, initial_state=state["ssm"])  # (B, H, P)
        y = self.wo(self._gated_norm(y.flatten(1), z, fp32=False))
        return y, {"conv": window[:, :, 1:].clone(), "ssm": h.to(x_t.dtype)}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * (self.conv_dim * (self.d_conv - 1) + self.n_heads * self.P * self.d_state) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, naive_ssd, fp32=True)[0]
