"""Retention, the core of RetNet (Sun et al. 2023, "Retentive Network", arXiv:2307.08621), per head h:

    S_t = gamma_h S_{t-1} + k_t v_t^T        (D_k x D_v)
    o_t = scale * S_t^T q_t                   scale = D_k^-0.5

with a fixed decay per head, gamma_h = 1 - 2^(-5-h) (multi-scale retention). The paper's parallel form
(Q K^T * D) V with D_ts = gamma^(t-s) is the same function; its relative position (xPos rotation of q and k) is
applied by the mixer before this op. Gates enter as ``log_decay`` (H,) = log gamma_h.

Forms, one signature ``(q, k, v, log_decay, initial_state=None, scale=None) -> (out, final_state)`` on (B, T, H, D)
tensors with state (B, H, D_k, D_v): ``naive_retention`` (the fp32 loop), ``chunk_retention`` (chunkwise parallel,
see ``_chunkwise``), ``retention_step`` (one token, T = 1, for decoding).
"""
from __future__ import annotations

import torch

from ._chunkwise import chunkwise_recurrence
from .precision import promote


def retnet_log_decays(n_heads: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
                      ) -> torch.Tensor:
    """log gamma_h for gamma_h = 1 - 2^(-5-h), h = 0..H-1, in ``dtype`` (computed, not stored)."""
    h = torch.arange(n_heads, dtype=dtype, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


def naive_retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                    initial_state: torch.Tensor | None = None, scale: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, token by token, in fp32. q, k: (B, T, H, K); v: (B, T, H, V); log_decay: (H,)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q, k, v = q.float(), k.float(), v.float()
    gamma = log_decay.float().exp()[None, :, None, None]  # (1, H, 1, 1)
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    out = []
    for t in range(T):
        S = gamma * S + torch.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def chunk_retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                    initial_state: torch.Tensor | None = None, scale: float | None = None, chunk_size: int = 32
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel retention: a scalar gate per head, the same at every token."""
    B, T, H, _ = q.shape
    g = log_decay.to(q.device, promote(q))[None, None, :].expand(B, T, H)  # (B, T, H), in at least fp32
    return chunkwise_recurrence(q, k, v, g=g, initial_state=initial_state, scale=scale, chunk_size=chunk_size)


def retention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor,
                   initial_state: torch.Tensor | None = None, scale: float | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: q, k, v of one token (B, 1, H, D) -> (o (B, 1, H, V), new state)."""
    dtype, cd = q.dtype, promote(q)  # computed in at least fp32, as the chunked form; returned in q's dtype
    q, k, v = (t[:, 0].to(cd) for t in (q, k, v))  # (B, H, D)
    B, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(cd)
    gamma = log_decay.to(cd).exp()[None, :, None, None]  # (1, H, 1, 1)
    S = gamma * S + k[..., :, None] * v[..., None, :]
    o = scale * (q[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    return o[:, None].to(dtype), S.to(dtype)


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("retnet")
def make_retention_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                          generator: torch.Generator) -> dict:
    """Gaussian q, k, v (B, T, H, D); RetNet's fixed decays gamma_h = 1 - 2^(-5-h)."""
    def randn():
        return torch.randn(B, T, H, D, generator=generator).to(device, dtype)
    return {"q": randn(), "k": randn(), "v": randn(), "log_decay": retnet_log_decays(H, device)}


@register_op_impl("retnet", "chunk", source="ours")
def _retention_chunk(inputs: dict) -> torch.Tensor:
    return chunk_retention(**inputs)[0]


@register_op_impl("retnet", "naive", source="ours")
def _retention_naive(inputs: dict) -> torch.Tensor:
    return naive_retention(**inputs)[0]


@register_op_impl("retnet", "fla.naive_retention", source="fla", requires=("fla",),
                  notes="fla's parallel PyTorch reference: (Q K^T * D) V with the dense (T x T) decay mask, "
                        "decays 1 - 2^(-5-h) fixed inside; no state")
def _retention_fla_naive(inputs: dict) -> torch.Tensor:
    from fla.ops.retention.naive import naive_retention as fla_naive_retention

    q, k, v = (inputs[n].transpose(1, 2) for n in ("q", "k", "v"))  # (B, H, T, D): fla's layout here
    return fla_naive_retention(q, k, v).transpose(1, 2)
