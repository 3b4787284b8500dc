"""Mamba (Gu & Dao 2023, arXiv:2312.00752): a selective state space layer, no attention at all. Section 3.4, Fig. 3:

    x, z = in_proj(u)                              (B, T, E) each, E = expand * d_model
    x    = SiLU(causal depthwise conv1d(x))        kernel d_conv
    dt, B, C = x_proj(x)                           (dt_rank, N, N): the input-dependent ("selective") parameters
    dt   = softplus(dt_proj(dt))                   (B, T, E)
    y    = selective_scan(x, dt, A = -exp(A_log), B, C) + D * x     (``ops.selective_scan``)
    out  = out_proj(y * SiLU(z))

Mamba has no heads: ``n_heads`` is accepted (the Mixer contract) and ignored. Decoding keeps the last d_conv - 1 conv
inputs and the (E x N) SSM state: constant in the context length.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.selective_scan import chunk_selective_scan, naive_selective_scan, selective_scan_step
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


@register_mixer("mamba", spec=MixerSpec(
    family="state space",
    paper=Paper("Mamba: Linear-Time Sequence Modeling with Selective State Spaces", "2312.00752", 2023),
    claimed_time="O(nd)", claimed_memory="O(d)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality="~97%",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "mamba_ssm"),
    default_hparams={"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": None, "chunk_size": 64,
                     "inner_norm_eps": None},
    test_hparams={"d_state": 6, "expand": 1, "chunk_size": 16},
    notes="The guide's memory cell O(d) is the recurrent state (a constant E x N per layer, plus d_conv - 1 conv "
          "inputs): that is state_exponent 0. A prefill (forward) pass still reads n tokens and writes n outputs, "
          "so its activation memory is O(n d) at best: memory_exponent 1 is what the guide's cell allows for the "
          "measured prefill peak (our chunked scan keeps O(n d N) discretised decays, still linear in n). "
          "n_heads is ignored (Mamba has no heads). impl 'mamba_ssm' calls mamba_ssm's CUDA selective_scan_fn.",
))
class Mamba(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None,
                 chunk_size: int = 64, inner_norm_eps: float | None = None):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        # inner_norm_eps: Jamba's RMSNorms (with weights) on dt, B and C after x_proj, for stability at scale
        # (Lieber et al. 2024, arXiv:2403.19887, section 3); None = the Mamba paper's layer, without them
        self.inner_norm_eps = inner_norm_eps
        if min(d_state, d_conv, expand, chunk_size) < 1:
            raise ValueError("d_state, d_conv, expand and chunk_size must be >= 1")
        self.d_state, self.d_conv, self.expand, self.dt_rank, self.chunk_size = d_state, d_conv, expand, dt_rank, \
            chunk_size
        E, R = expand * d_model, dt_rank or math.ceil(d_model / 16)
        self.d_inner, self.rank = E, R
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, bias=True)  # depthwise; causal padding is ours
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.wo = nn.Linear(E, d_model, bias=False)
        if inner_norm_eps is not None:
            self.dt_norm, self.B_norm, self.C_norm = (nn.Parameter(torch.ones(n)) for n in (R, d_state, d_state))
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        """The paper's dt initialisation: softplus(dt_proj(.) + bias) starts in [1e-3, 1e-1], log-uniform, the weight
        uniform within rank^-1/2. A model's generic init would leave the bias 0 (dt = softplus(0) = 0.69 in every
        channel: each step multiplies the state by exp(-0.69 n), n = 1..16, so memory fades within a few tokens)."""
        E, R = self.d_inner, self.rank
        nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
        dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_proj.bias.copy_(inverse_softplus(dt).to(self.dt_proj.bias))

    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        if impl == "mamba_ssm":
            if importlib.util.find_spec("mamba_ssm") is None:
                return "mamba_ssm not installed"
            if device.type != "cuda":
                return f"mamba_ssm's selective scan needs CUDA (device is {device.type})"
        return None

    # ---- the layer --------------------------------------------------------------------------------------------
    @staticmethod
    def _w(p: torch.Tensor | None, fp32: bool) -> torch.Tensor | None:
        return p.float() if (fp32 and p is not None) else p

    def _conv(self, window: torch.Tensor, fp32: bool) -> torch.Tensor:
        """Causal depthwise conv + SiLU: window (B, E, d_conv - 1 + T), the inputs preceded by the d_conv - 1
        earlier ones -> (B, E, T)."""
        return F.silu(F.conv1d(window, self._w(self.conv1d.weight, fp32), self._w(self.conv1d.bias, fp32),
                               groups=self.d_inner))

    def _ssm_inputs(self, x: torch.Tensor, fp32: bool):
        """x: (..., E) after the conv -> dt: (..., E), A: (E, N), B, C: (..., N)."""
        dt, B, C = F.linear(x, self._w(self.x_proj.weight, fp32)).split([self.rank, self.d_state, self.d_state], -1)
        if self.inner_norm_eps is not None:
            dt, B, C = (self._rms(t, w, fp32) for t, w in ((dt, self.dt_norm), (B, self.B_norm), (C, self.C_norm)))
        dt = F.softplus(F.linear(dt, self._w(self.dt_proj.weight, fp32), self._w(self.dt_proj.bias, fp32)))
        A = -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))  # (E, N), < 0
        return dt, A, B, C

    def _rms(self, t: torch.Tensor, weight: torch.Tensor, fp32: bool) -> torch.Tensor:
        tf = t.float()
        tf = tf * torch.rsqrt(tf.pow(2).mean(-1, keepdim=True) + self.inner_norm_eps)
        return self._w(weight, fp32) * tf.to(t.dtype)

    def _run(self, x: torch.Tensor, state: State | None, scan, fp32: bool = False) -> tuple[torch.Tensor, State]:
        """x: (B, T, d_model) -> y, the state after x (conv history and SSM state)."""
        if fp32:
            x = x.float()
        xz = F.linear(x, self._w(self.in_proj.weight, fp32))
        xs, z = xz.chunk(2, dim=-1)  # (B, T, E) each
        xs = xs.transpose(1, 2)  # (B, E, T) for the conv
        history = state["conv"] if state else xs.new_zeros(x.shape[0], self.d_inner, self.d_conv - 1)
        window = torch.cat([history.to(xs.dtype), xs], dim=-1)  # (B, E, d_conv - 1 + T)
        xc = self._conv(window, fp32).transpose(1, 2)  # (B, E, T) -> (B, T, E)
        dt, A, B, C = self._ssm_inputs(xc, fp32)
        y, h = scan(xc, dt, A, B, C, self._w(self.D, fp32), initial_state=state["ssm"] if state else None)
        y = F.linear(y * F.silu(z), self._w(self.wo.weight, fp32))
        new_state = {"conv": window[:, :, window.shape[-1] - (self.d_conv - 1):].clone(), "ssm": h.to(x.dtype)}
        return y, new_state

    def _fast_scan(self, x, dt, A, B, C, D, initial_state=None):
        if self.impl == "mamba_ssm":  # (B, T, E) -> mamba_ssm's (B, E, T) layout
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            if initial_state is not None:
                raise NotImplementedError("mamba_ssm's selective_scan_fn starts from a zero state")
            y, h = selective_scan_fn(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2).contiguous(),
                                     C.transpose(1, 2).contiguous(), D.float(), return_last_state=True)
            return y.transpose(1, 2), h
        return chunk_selective_scan(x, dt, A, B, C, D, initial_state=initial_state, chunk_size=self.chunk_size)

    # ---- the contract -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self._run(x, None, self._fast_scan)

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"conv": torch.zeros(batch, self.d_inner, self.d_conv - 1, **kw),
                "ssm": torch.zeros(batch, self.d_inner, self.d_state, **kw)}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat([state["conv"], xs[:, :, None]], dim=-1)  # (B, E, d_conv)
        xc = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)  # (B, E)
        dt, A, B, C = self._ssm_inputs(xc, fp32=False)
        y, h = selective_scan_step(xc, dt, A, B, C, self.D, initial_state=state["ssm"])
        y = self.wo(y * F.silu(z))
        return y, {"conv": window[:, :, 1:].clone(), "ssm": h.to(x_t.dtype)}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * self.d_inner * (self.d_conv - 1 + self.d_state) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, naive_selective_scan, fp32=True)[0]
