"""Causal kernel (linear) attention, Katharopoulos et al. 2020 (arXiv:2006.16236), on feature-mapped q, k.

    S_t = S_{t-1} + k_t v_t^T        (D_k x D_v)      z_t = z_{t-1} + k_t      (D_k)
    o_t = (q_t^T S_t) / (q_t^T z_t + eps)

q and k must already be positive features (the mixer applies elu + 1). All forms share one signature,
``(q, k, v, initial_state) -> (out, final_state)`` with ``state = (S: (B, H, D_k, D_v), z: (B, H, D_k))``.
``chunk_linear_attention`` is the chunkwise-parallel form: O(T C d + T d^2) time, O(T d + (T/C) d^2) memory.

``eps`` is a float, or a tensor of one value per query ((B, T, H); (B, H) for a step): FAVOR+ divides each query's
features by a stabilising factor and passes eps divided by the same factor, so the ratio is unchanged.
The fast forms compute in at least fp32 (``precision.promote``) and return outputs and states in q's dtype.
"""
from __future__ import annotations

import torch

from .precision import promote

LinearState = tuple[torch.Tensor, torch.Tensor]
Eps = float | torch.Tensor


def _zero_state(q: torch.Tensor, v: torch.Tensor) -> LinearState:
    B, _, H, Dk = q.shape
    return (q.new_zeros(B, H, Dk, v.shape[-1]), q.new_zeros(B, H, Dk))


def naive_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, initial_state: LinearState | None = None,
                           eps: Eps = 1e-6) -> tuple[torch.Tensor, LinearState]:
    """The recurrence, one token at a time, in at least fp32. q, k: (B, T, H, D_k); v: (B, T, H, D_v)."""
    cd = promote(q)
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    S, z = initial_state if initial_state is not None else _zero_state(q, v)
    S, z = S.to(cd), z.to(cd)
    out = torch.zeros_like(v)
    for t in range(q.shape[1]):
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])
        z = z + k[:, t]
        num = torch.einsum("bhk,bhkv->bhv", q[:, t], S)
        eps_t = eps[:, t, :, None] if isinstance(eps, torch.Tensor) else eps  # (B, H, 1) or a float
        den = torch.einsum("bhk,bhk->bh", q[:, t], z)[..., None] + eps_t
        out[:, t] = num / den
    return out, (S, z)


def linear_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: LinearState, eps: Eps = 1e-6
                          ) -> tuple[torch.Tensor, LinearState]:
    """One decoding step. q, k: (B, H, D_k); v: (B, H, D_v) -> (o: (B, H, D_v), state)."""
    dtype, cd = q.dtype, promote(q)
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    S, z = (s.to(cd) for s in state)
    S = S + k[..., :, None] * v[..., None, :]
    z = z + k
    num = (q[..., None, :] @ S).squeeze(-2)  # (B, H, D_v)
    den = (q * z).sum(-1, keepdim=True) + (eps[..., None] if isinstance(eps, torch.Tensor) else eps)
    return (num / den).to(dtype), (S.to(dtype), z.to(dtype))


def _exclusive_prefix(initial: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """initial (B, H, ...), parts (B, H, n, ...) -> (B, H, n, ...): initial + parts[:, :, :i] summed, for each i."""
    inclusive = initial[:, :, None] + parts.cumsum(dim=2)  # (B, H, n, ...): through chunk i
    return torch.cat([initial[:, :, None], inclusive[:, :, :-1]], dim=2)  # shifted by one chunk: before chunk i


def chunk_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, initial_state: LinearState | None = None,
                           chunk_size: int = 64, eps: Eps = 1e-6) -> tuple[torch.Tensor, LinearState]:
    """Chunkwise-parallel causal form: within a chunk a masked (C x C) product, across chunks the running state."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    C = chunk_size
    n = -(-T // C)
    pad = n * C - T
    dtype, cd = q.dtype, promote(q)
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    if pad:  # zero keys/values add nothing to S or z; padded queries are cut off at the end
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    if isinstance(eps, torch.Tensor):  # (B, T, H) -> (B, H, n, C), padded with ones (finite padded rows)
        eps = torch.nn.functional.pad(eps.to(cd), (0, 0, 0, pad), value=1.0).view(B, n, C, H).permute(0, 3, 1, 2)
    S0, z0 = initial_state if initial_state is not None else _zero_state(q, v)
    S0, z0 = S0.to(cd), z0.to(cd)
    q = q.view(B, n, C, H, Dk).permute(0, 3, 1, 2, 4)  # (B, H, n, C, Dk)
    k = k.view(B, n, C, H, Dk).permute(0, 3, 1, 2, 4)
    v = v.view(B, n, C, H, Dv).permute(0, 3, 1, 2, 4)  # (B, H, n, C, Dv)
    kv = k.transpose(-2, -1) @ v  # (B, H, n, Dk, Dv): each chunk's contribution to S
    ksum = k.sum(dim=-2)  # (B, H, n, Dk)
    # State entering each chunk: the initial state plus the chunks before it (an exclusive prefix sum). It is built
    # from earlier chunks only, never as (inclusive sum) - (own chunk), whose rounding would carry the chunk's later
    # tokens into its earlier outputs: past outputs stay bitwise unchanged when future tokens change.
    S_in = _exclusive_prefix(S0, kv)  # (B, H, n, Dk, Dv)
    z_in = _exclusive_prefix(z0, ksum)  # (B, H, n, Dk)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    intra = (q @ k.transpose(-2, -1)).masked_fill(~causal, 0.0)  # (B, H, n, C, C)
    num = q @ S_in + intra @ v  # (B, H, n, C, Dv)
    den = (q @ z_in[..., None]).squeeze(-1) + intra.sum(-1) + eps  # (B, H, n, C)
    out = num / den[..., None]
    out = out.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, Dv)[:, :T]  # (B, T, H, Dv)
    S_final = S_in[:, :, -1] + kv[:, :, -1]
    z_final = z_in[:, :, -1] + ksum[:, :, -1]
    return out.to(dtype), (S_final.to(dtype), z_final.to(dtype))


def bidirectional_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: Eps = 1e-6
                                   ) -> torch.Tensor:
    """Non-causal form: every query sees the sums over all keys. O(T d^2)."""
    dtype, cd = q.dtype, promote(q)
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    S = torch.einsum("bthk,bthv->bhkv", k, v)  # (B, H, Dk, Dv)
    z = k.sum(dim=1)  # (B, H, Dk)
    num = torch.einsum("bthk,bhkv->bthv", q, S)
    den = torch.einsum("bthk,bhk->bth", q, z)[..., None] + (eps[..., None] if isinstance(eps, torch.Tensor) else eps)
    return (num / den).to(dtype)


def naive_bidirectional_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: Eps = 1e-6
                                         ) -> torch.Tensor:
    """Oracle for the non-causal form: per query, the kernel-weighted average of all values, in at least fp32."""
    cd = promote(q)
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    out = torch.zeros_like(v)
    for t in range(q.shape[1]):
        w = torch.einsum("bhk,bshk->bsh", q[:, t], k)  # (B, S, H): phi(q_t) . phi(k_s)
        eps_t = eps[:, t, :, None] if isinstance(eps, torch.Tensor) else eps  # (B, H, 1) or a float
        out[:, t] = torch.einsum("bsh,bshv->bhv", w, v) / (w.sum(1)[..., None] + eps_t)
    return out


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("linear")
def make_linear_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                       generator: torch.Generator) -> dict:
    """Positive features (elu + 1 of Gaussians) for q, k; Gaussian v; all (B, T, H, D)."""
    def randn():
        return torch.randn(B, T, H, D, generator=generator, dtype=torch.float32).to(device, dtype)
    return {"q": torch.nn.functional.elu(randn()) + 1, "k": torch.nn.functional.elu(randn()) + 1, "v": randn()}


@register_op_impl("linear", "chunk", source="ours")
def _linear_chunk(inputs: dict) -> torch.Tensor:
    return chunk_linear_attention(**inputs)[0]


@register_op_impl("linear", "naive", source="ours")
def _linear_naive(inputs: dict) -> torch.Tensor:
    return naive_linear_attention(**inputs)[0]


@register_op_impl("linear", "fla.naive_recurrent_linear_attn", source="fla", requires=("fla",),
                  notes="fla's recurrent PyTorch reference, normalize=True, scale=1")
def _linear_fla_recurrent(inputs: dict) -> torch.Tensor:
    from fla.ops.linear_attn.naive import naive_recurrent_linear_attn

    return naive_recurrent_linear_attn(inputs["q"], inputs["k"], inputs["v"], scale=1.0, normalize=True)[0]


@register_op_impl("linear", "fla.naive_chunk_linear_attn", source="fla", requires=("fla",),
                  notes="fla's chunked PyTorch reference (chunk 64; T must be a multiple of 64), normalize=True")
def _linear_fla_chunk(inputs: dict) -> torch.Tensor:
    from fla.ops.linear_attn.naive import naive_chunk_linear_attn

    return naive_chunk_linear_attn(inputs["q"], inputs["k"], inputs["v"], scale=1.0, normalize=True)
