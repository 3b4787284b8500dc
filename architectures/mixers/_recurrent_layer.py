"""Shared parts of the linear-recurrent mixers (retnet, gla, deltanet, gated_deltanet, kda): the short causal
depthwise convolution with its rolling decode buffer, per-head normalisations, and the optional fla backend check.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State


class ShortConv(nn.Module):
    """Causal depthwise 1-D convolution over time followed by SiLU (the "ShortConv" of DeltaNet, Gated DeltaNet and
    KDA; kernel 4, no bias): y_t = silu(sum_j w_j x_(t - W + 1 + j)). Its decode state is the last W - 1 inputs."""

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        bound = 1.0 / math.sqrt(kernel_size)  # nn.Conv1d's default for a depthwise kernel (fan_in = kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def init_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch, self.kernel_size - 1, self.channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C); cache: (B, W - 1, C) earlier inputs (zeros at the start) -> (y (B, T, C), new cache)."""
        B, T, C = x.shape
        if cache is None:
            cache = self.init_cache(B, x.device, x.dtype)
        xp = torch.cat([cache, x], dim=1)  # (B, W - 1 + T, C)
        y = F.conv1d(xp.transpose(1, 2), self.weight[:, None, :], groups=C).transpose(1, 2)  # (B, T, C)
        # A copy, not a view: the cache must not keep the whole sequence's storage alive.
        return F.silu(y), xp[:, xp.shape[1] - (self.kernel_size - 1):].clone()

    def step(self, x_t: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t: (B, C), cache (B, W - 1, C) -> (y_t (B, C), new cache)."""
        window = torch.cat([cache, x_t[:, None]], dim=1)  # (B, W, C)
        y = (window * self.weight.t()).sum(dim=1)  # (B, C)
        return F.silu(y), window[:, 1:].clone()

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 oracle from a zero state: the sum over the kernel of shifted inputs, as written."""
        x, w = x.float(), self.weight.float()
        T = x.shape[1]
        xp = F.pad(x, (0, 0, self.kernel_size - 1, 0))  # (B, W - 1 + T, C): zeros before the first token
        return F.silu(sum(w[:, j] * xp[:, j:j + T] for j in range(self.kernel_size)))


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum x^2 + eps) over the last dimension (fla's l2norm), in fp32, cast back."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def head_rms_norm(o: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over each head's channels: o (B, T, H, V), weight (V,) shared by the heads; in fp32, cast back."""
    of = o.float()
    return (of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(o.dtype)


def fla_unavailable_reason(impl: str, device: torch.device) -> str | None:
    """Why ``impl: fla`` (flash-linear-attention's Triton kernels) cannot run here; None for other impls."""
    if impl != "fla":
        return None
    if importlib.util.find_spec("fla") is None:
        return "flash-linear-attention not installed"
    if device.type != "cuda":
        return "fla Triton kernels need CUDA"
    return None


def linear(x: torch.Tensor, layer: nn.Linear, fp32: bool = False) -> torch.Tensor:
    """``layer(x)``, or the same in fp32 with upcast weights (the reference path)."""
    if not fp32:
        return layer(x)
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


class LinearRecurrentMixer(Mixer):
    """Plumbing shared by the mixers whose core is a matrix-valued recurrence (state S: (B, H, D_k, D_v)).

    A subclass defines the layer: ``_features(x, conv_cache, start, fp32)`` -> (op inputs as keyword arguments,
    whatever ``_output`` needs, new conv cache or None) and ``_output(o, aux, fp32)`` -> (B, T, D); names its op's
    three forms (``chunk_op``, ``naive_op``, ``step_op``); and ``_fla_chunk(inputs)`` calls fla's Triton kernel
    (``impl: fla``; decoding then uses our step form).
    The decode state is {"S": recurrent state, "conv": the short convolution's last W-1 inputs (if any),
    "pos": tokens seen}; its size does not depend on the number of tokens seen.
    """

    chunk_op: Callable
    naive_op: Callable
    step_op: Callable

    # ---- what a subclass provides -------------------------------------------------------------------------------
    key_dim: int  # per head
    value_dim: int  # per head
    conv_channels: int = 0  # channels of the short convolution (0: none)

    def _features(self, x: torch.Tensor, conv_cache: torch.Tensor | None, start: int, fp32: bool = False):
        raise NotImplementedError

    def _output(self, o: torch.Tensor, aux, fp32: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def _fla_chunk(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # ---- the contract -------------------------------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        return fla_unavailable_reason(impl, device)

    def _chunked(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.impl == "fla":  # flash-linear-attention's Triton kernel, same conventions ((B, T, H, D), log gates)
            return self._fla_chunk(inputs)
        return type(self).chunk_op(**inputs, chunk_size=self.chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        inputs, aux, conv = self._features(x, None, 0)
        o, S = self._chunked(inputs)
        return self._output(o, aux), self._state(S, conv, x.shape[1])

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        S = torch.zeros(batch, self.n_heads, self.key_dim, self.value_dim, **kw)
        conv = torch.zeros(batch, self.conv_size - 1, self.conv_channels, **kw) if self.conv_channels else None
        return self._state(S, conv, 0)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        inputs, aux, conv = self._features(x_t[:, None], state.get("conv"), state["pos"])
        o, S = type(self).step_op(**inputs, initial_state=state["S"])
        return self._output(o, aux)[:, 0], self._state(S, conv, state["pos"] + 1)

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        conv = (self.conv_size - 1) * self.conv_channels if self.conv_channels else 0
        return batch * (self.n_heads * self.key_dim * self.value_dim + conv) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        inputs, aux, _ = self._features(x, None, 0, fp32=True)
        o, _ = type(self).naive_op(**inputs)
        return self._output(o, aux, fp32=True)

    @staticmethod
    def _state(S: torch.Tensor, conv: torch.Tensor | None, pos: int) -> State:
        state = {"S": S, "pos": pos}
        if conv is not None:
            state["conv"] = conv
        return state


class DeltaRuleMixer(LinearRecurrentMixer):
    """The input side shared by DeltaNet, Gated DeltaNet and KDA: q, k, v = SiLU(ShortConv(x W)) (one depthwise
    convolution over the concatenated q, k, v channels, i.e. three per-channel convolutions), q and k L2-normalised
    per head, beta = sigmoid(x W_beta) per head."""

    def _init_qkv(self, d_model: int, conv_size: int) -> None:
        if conv_size < 1:
            raise ValueError(f"conv_size must be >= 1, got {conv_size}")
        self.key_dim = self.value_dim = self.head_dim
        inner = self.n_heads * self.head_dim  # d_model unless a subclass sets its own head size (Kimi Linear's KDA)
        self.conv_channels = 3 * inner
        self.wqkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.conv = ShortConv(3 * inner, conv_size)
        self.wbeta = nn.Linear(d_model, self.n_heads, bias=False)

    def _qkv_beta(self, x: torch.Tensor, conv_cache: torch.Tensor | None, fp32: bool):
        """x: (B, T, D) -> q, k, v (B, T, H, Dh), beta (B, T, H), new conv cache (None in the reference path)."""
        B, T, D = x.shape
        qkv = linear(x, self.wqkv, fp32)  # (B, T, 3D)
        if fp32:
            qkv, conv_cache = self.conv.reference(qkv), None
        else:
            qkv, conv_cache = self.conv(qkv, conv_cache)
        q, k, v = qkv.view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # 3 x (B, T, H, Dh)
        beta = linear(x, self.wbeta, fp32).float().sigmoid()  # (B, T, H)
        return l2_normalize(q), l2_normalize(k), v, beta, conv_cache
