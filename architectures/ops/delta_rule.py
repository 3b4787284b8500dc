"""The delta rule, the core of DeltaNet (Schlag et al. 2021; Yang et al. 2024, "Parallelizing Linear Transformers
with the Delta Rule over Sequence Length", arXiv:2406.06484), per head:

    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T  =  (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t                               scale = D_k^-0.5

beta_t in (0, 1) is the writing strength; k_t should be L2-normalised (the mixer does it) so that the transition
(I - beta k k^T) is a contraction.

Forms, one signature ``(q, k, v, beta, initial_state=None, scale=None) -> (out, final_state)`` on (B, T, H, D)
tensors (beta: (B, T, H)) with state (B, H, D_k, D_v): ``naive_delta_rule`` (the fp32 loop), ``chunk_delta_rule``
(chunkwise parallel through the WY / UT-transform representation: the in-chunk pseudo-values solve a unit
lower-triangular system, see ``_chunkwise``), ``delta_rule_step`` (one token, for decoding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunkwise import chunkwise_recurrence
from .precision import promote


def naive_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     initial_state: torch.Tensor | None = None, scale: float | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, token by token, in fp32. q, k: (B, T, H, K); v: (B, T, H, V); beta: (B, T, H)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    out = []
    for t in range(T):
        v_old = torch.einsum("bhkv,bhk->bhv", S, k[:, t])  # what the memory currently returns for k_t
        S = S + torch.einsum("bhk,bhv->bhkv", beta[:, t, :, None] * k[:, t], v[:, t] - v_old)
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def chunk_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     initial_state: torch.Tensor | None = None, scale: float | None = None, chunk_size: int = 32
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel delta rule (WY form, no gate)."""
    return chunkwise_recurrence(q, k, v, beta=beta, initial_state=initial_state, scale=scale,
                                chunk_size=chunk_size)


def delta_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                    initial_state: torch.Tensor | None = None, scale: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: q, k, v (B, 1, H, D), beta (B, 1, H) -> (o (B, 1, H, V), new state), both in q's dtype;
    computed in at least fp32, as the chunked form."""
    dtype, cd = q.dtype, promote(q)
    q, k, v, beta = (t[:, 0].to(cd) for t in (q, k, v, beta))  # (B, H, D), beta (B, H)
    B, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(cd)
    v_old = (k[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    S = S + (beta[..., None] * k)[..., :, None] * (v - v_old)[..., None, :]
    o = scale * (q[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    return o[:, None].to(dtype), S.to(dtype)


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


def _randn(B, T, H, D, dtype, device, generator):
    return torch.randn(B, T, H, D, generator=generator).to(device, dtype)


@register_op("deltanet")
def make_delta_rule_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                           generator: torch.Generator) -> dict:
    """Gaussian q, v; L2-normalised Gaussian k (B, T, H, D); beta = sigmoid(N(0, 1)) (B, T, H)."""
    q, k, v = (_randn(B, T, H, D, dtype, device, generator) for _ in range(3))
    beta = torch.randn(B, T, H, generator=generator).sigmoid().to(device, dtype)
    return {"q": q, "k": F.normalize(k.float(), dim=-1).to(dtype), "v": v, "beta": beta}


@register_op_impl("deltanet", "chunk", source="ours")
def _delta_chunk(inputs: dict) -> torch.Tensor:
    return chunk_delta_rule(**inputs)[0]


@register_op_impl("deltanet", "naive", source="ours")
def _delta_naive(inputs: dict) -> torch.Tensor:
    return naive_delta_rule(**inputs)[0]


def _heads_first(inputs: dict) -> list[torch.Tensor]:
    """fla.ops.delta_rule.naive works in the (B, H, T, D) layout."""
    return [inputs[n].transpose(1, 2) for n in ("q", "k", "v", "beta")]


@register_op_impl("deltanet", "fla.delta_rule_recurrence", source="fla", requires=("fla", "einops"),
                  notes="fla's recurrent PyTorch reference (fla.ops.delta_rule.naive), (B, H, T, D) layout")
def _delta_fla_recurrence(inputs: dict) -> torch.Tensor:
    from fla.ops.delta_rule.naive import delta_rule_recurrence

    return delta_rule_recurrence(*_heads_first(inputs))[0].transpose(1, 2)


@register_op_impl("deltanet", "fla.delta_rule_chunkwise", source="fla", requires=("fla", "einops"),
                  notes="fla's chunked PyTorch reference (chunk 32, T a multiple of 32, no initial state)")
def _delta_fla_chunkwise(inputs: dict) -> torch.Tensor:
    from fla.ops.delta_rule.naive import delta_rule_chunkwise

    q, k, v, beta = (t.float() for t in _heads_first(inputs))
    return delta_rule_chunkwise(q, k, v, beta)[0].transpose(1, 2)
