"""The gated delta rule, the core of Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks:
Improving Mamba2 with Delta Rule", arXiv:2412.06464), per head, with a scalar data-dependent decay alpha_t:

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
        = S' + beta_t k_t (v_t - S'^T k_t)^T   with S' = alpha_t S_{t-1}
    o_t = scale * S_t^T q_t                     scale = D_k^-0.5

Gates enter in log space: ``g`` (B, T, H) = log alpha_t <= 0; ``beta`` (B, T, H) in (0, 1).

Forms, one signature ``(q, k, v, g, beta, initial_state=None, scale=None) -> (out, final_state)`` on (B, T, H, D)
tensors with state (B, H, D_k, D_v): ``naive_gated_delta_rule`` (the fp32 loop), ``chunk_gated_delta_rule``
(chunkwise parallel, WY form with the decays inside the chunk as exp of cumulative log-gate differences, see
``_chunkwise``), ``gated_delta_rule_step`` (one token, for decoding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunkwise import chunkwise_recurrence
from .precision import promote


def naive_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           initial_state: torch.Tensor | None = None, scale: float | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, token by token, in fp32. q, k: (B, T, H, K); v: (B, T, H, V); g, beta: (B, T, H)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q, k, v, g, beta = q.float(), k.float(), v.float(), g.float(), beta.float()
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    out = []
    for t in range(T):
        S = g[:, t].exp()[..., None, None] * S  # forget
        v_old = torch.einsum("bhkv,bhk->bhv", S, k[:, t])
        S = S + torch.einsum("bhk,bhv->bhkv", beta[:, t, :, None] * k[:, t], v[:, t] - v_old)  # delta write
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           initial_state: torch.Tensor | None = None, scale: float | None = None,
                           chunk_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel gated delta rule (WY form with a scalar decay per token and head)."""
    return chunkwise_recurrence(q, k, v, g=g, beta=beta, initial_state=initial_state, scale=scale,
                                chunk_size=chunk_size)


def gated_delta_rule_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                          initial_state: torch.Tensor | None = None, scale: float | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: q, k, v (B, 1, H, D), g, beta (B, 1, H) -> (o (B, 1, H, V), new state)."""
    dtype, cd = q.dtype, promote(q)  # computed in at least fp32, as the chunked form; returned in q's dtype
    q, k, v, g, beta = (t[:, 0].to(cd) for t in (q, k, v, g, beta))  # (B, H, D), (B, H)
    B, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(cd)
    S = g.exp()[..., None, None] * S
    v_old = (k[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    S = S + (beta[..., None] * k)[..., :, None] * (v - v_old)[..., None, :]
    o = scale * (q[..., None, :] @ S).squeeze(-2)  # (B, H, V)
    return o[:, None].to(dtype), S.to(dtype)


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("gated_deltanet")
def make_gated_delta_rule_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                                 generator: torch.Generator) -> dict:
    """Gaussian q, v; L2-normalised k (B, T, H, D); g = logsigmoid(N(0, 1)), beta = sigmoid(N(0, 1)) (B, T, H)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)
    q, k, v = randn(B, T, H, D), randn(B, T, H, D), randn(B, T, H, D)
    return {"q": q.to(dtype), "k": F.normalize(k, dim=-1).to(dtype), "v": v.to(dtype),
            "g": F.logsigmoid(randn(B, T, H)).to(dtype), "beta": randn(B, T, H).sigmoid().to(dtype)}


@register_op_impl("gated_deltanet", "chunk", source="ours")
def _gdn_chunk(inputs: dict) -> torch.Tensor:
    return chunk_gated_delta_rule(**inputs)[0]


@register_op_impl("gated_deltanet", "naive", source="ours")
def _gdn_naive(inputs: dict) -> torch.Tensor:
    return naive_gated_delta_rule(**inputs)[0]


@register_op_impl("gated_deltanet", "fla.naive_recurrent_gated_delta_rule", source="fla", requires=("fla",),
                  notes="fla's recurrent PyTorch reference (fla.ops.gated_delta_rule.naive)")
def _gdn_fla_recurrent(inputs: dict) -> torch.Tensor:
    from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

    i = inputs
    return naive_recurrent_gated_delta_rule(i["q"], i["k"], i["v"], i["beta"], i["g"])[0]


@register_op_impl("gated_deltanet", "fla.naive_chunk_gated_delta_rule", source="fla", requires=("fla", "einops"),
                  notes="fla's chunked PyTorch reference (chunk 64)")
def _gdn_fla_chunk(inputs: dict) -> torch.Tensor:
    from fla.ops.gated_delta_rule.naive import naive_chunk_gated_delta_rule

    i = inputs
    return naive_chunk_gated_delta_rule(i["q"], i["k"], i["v"], i["g"], i["beta"])[0]
