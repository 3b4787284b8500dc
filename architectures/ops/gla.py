"""Gated linear attention (Yang et al. 2023, "Gated Linear Attention Transformers with Hardware-Efficient
Training", arXiv:2312.06635), per head, with a data-dependent forget gate per key channel:

    S_t = diag(alpha_t) S_{t-1} + k_t v_t^T        alpha_t = exp(g_t) in (0, 1]^{D_k}
    o_t = scale * S_t^T q_t                         scale = D_k^-0.5

Gates enter in log space, ``g`` (B, T, H, D_k) <= 0 (the mixer computes logsigmoid(.) / 16).

Forms, one signature ``(q, k, v, g, initial_state=None, scale=None) -> (out, final_state)`` on (B, T, H, D)
tensors with state (B, H, D_k, D_v): ``naive_gla`` (the fp32 loop), ``chunk_gla`` (chunkwise parallel with
recursive halving of each chunk for the channel-wise decays, see ``_chunkwise``), ``gla_step`` (one token, for
decoding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunkwise import chunkwise_recurrence
from .precision import promote


def naive_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
              initial_state: torch.Tensor | None = None, scale: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, token by token, in fp32. q, k, g: (B, T, H, K); v: (B, T, H, V)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q, k, v, g = q.float(), k.float(), v.float(), g.float()
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    out = []
    for t in range(T):
        S = g[:, t].exp()[..., None] * S + torch.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def chunk_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
              initial_state: torch.Tensor | None = None, scale: float | None = None, chunk_size: int = 32
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel GLA."""
    return chunkwise_recurrence(q, k, v, g=g, initial_state=initial_state, scale=scale, chunk_size=chunk_size)


def gla_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
             initial_state: torch.Tensor | None = None, scale: float | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: q, k, v, g of one token (B, 1, H, D) -> (o (B, 1, H, V), new state)."""
    dtype, cd = q.dtype, promote(q)  # computed in at least fp32, as the chunked form; returned in q's dtype
    q, k, v, g = (t[:, 0].to(cd) for t in (q, k, v, g))  # (B, H, D)
    B, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(cd)
    S = g.exp()[..., None] * S + k[..., :, None] * v[..., None, :]
    o = scale * (q[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    return o[:, None].to(dtype), S.to(dtype)


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("gla")
def make_gla_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                    generator: torch.Generator) -> dict:
    """Gaussian q, k, v (B, T, H, D); log forget gates logsigmoid(N(0, 1)) / 16 per channel, as in the GLA layer."""
    def randn():
        return torch.randn(B, T, H, D, generator=generator).to(device, dtype)
    return {"q": randn(), "k": randn(), "v": randn(), "g": (F.logsigmoid(randn().float()) / 16).to(dtype)}


@register_op_impl("gla", "chunk", source="ours")
def _gla_chunk(inputs: dict) -> torch.Tensor:
    return chunk_gla(**inputs)[0]


@register_op_impl("gla", "naive", source="ours")
def _gla_naive(inputs: dict) -> torch.Tensor:
    return naive_gla(**inputs)[0]


@register_op_impl("gla", "fla.naive_recurrent_gla", source="fla", requires=("fla",),
                  notes="fla's recurrent PyTorch reference (scale D^-0.5, gates in log space)")
def _gla_fla_recurrent(inputs: dict) -> torch.Tensor:
    from fla.ops.gla.naive import naive_recurrent_gla

    return naive_recurrent_gla(inputs["q"], inputs["k"], inputs["v"], inputs["g"])[0]
