"""FAVOR+ (Performer, Choromanski et al. 2020, arXiv:2009.14794): softmax attention approximated with positive
orthogonal random features, then computed as linear attention.

    exp(q . k / sqrt(d)) = E_w[ phi(q) . phi(k) ],   phi(x) = exp(W x~ - |x~|^2 / 2) / sqrt(m),   x~ = x / d^(1/4)

with W (m x d) random features whose rows are orthogonal within blocks of d and whose lengths follow the chi(d)
distribution (the norms of Gaussian vectors), as in the paper's positive orthogonal random features. With these
features the attention is reassociated, phi(Q) (phi(K)^T V), and the causal form is the running-sum recurrence of
``ops.linear_attention`` (state S = sum phi(k) v^T (m x d_v), z = sum phi(k) (m)).

The output is the paper's ratio num / (den + eps), num = phi(q) . sum phi(k) v^T, den = phi(q) . sum phi(k).
Stabiliser: a query's features are divided by exp(c), c = max_j (W q~ - |q~|^2/2)_j (its largest exponent, so its
largest feature is 1/sqrt(m)), and eps by the same exp(c): num, den and eps all scale by exp(-c), so the ratio is
exactly the unstabilised one for any c, and c is held constant (detached) without changing the function or its
gradient. (Adding eps after the shift instead would compute num / (den + eps exp(c)).) The reference
implementation also divides the key features by one maximum taken over every key of the batch; in causal mode that
maximum reads future keys, so it is left out here: key features stay exp(W k~ - |k~|^2/2) <= exp(|w|^2 / 2), finite
in fp32 for head dims up to ~128. Features are computed in at least fp32 (``precision.promote``).

All forms share ``(q, k, v, projection, initial_state) -> (out, final_state)`` on raw q, k (B, T, H, D).
"""
from __future__ import annotations

import math

import torch

from .linear_attention import (LinearState, bidirectional_linear_attention, chunk_linear_attention,
                               linear_attention_step)
from .precision import promote


def orthogonal_random_features(n_features: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(n_features, dim): blocks of ``dim`` orthonormal rows (QR of a Gaussian matrix), each row then scaled by the
    norm of an independent Gaussian vector, so every row is marginally N(0, I) and rows in a block are orthogonal."""
    blocks = []
    for _ in range(-(-n_features // dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, _ = torch.linalg.qr(gaussian)
        blocks.append(q.T)  # rows orthonormal
    rows = torch.cat(blocks, dim=0)[:n_features]  # (m, d)
    norms = torch.randn(n_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)  # chi(d)
    return (rows * norms[:, None]).float()


def _exponents(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """W x~ - |x~|^2 / 2 in at least fp32. x: (B, T, H, D); projection: (m, D) -> (B, T, H, m)."""
    x = x.to(promote(x)) * x.shape[-1] ** -0.25
    return x @ projection.to(x.dtype).T - 0.5 * (x * x).sum(-1, keepdim=True)


def favor_features(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """The paper's positive random features phi(x) = exp(W x~ - |x~|^2/2) / sqrt(m) (the keys' features), in at
    least fp32. x: (B, T, H, D); projection: (m, D) -> (B, T, H, m)."""
    return torch.exp(_exponents(x, projection)) / math.sqrt(projection.shape[0])


def favor_query_features(q: torch.Tensor, projection: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stabilised query features and their eps: (phi(q) exp(-c), eps exp(-c)) with c the query's largest exponent
    (detached: the ratio does not depend on c). q: (B, T, H, D) -> ((B, T, H, m), (B, T, H))."""
    exponent = _exponents(q, projection)
    c = exponent.amax(dim=-1, keepdim=True).detach()  # (B, T, H, 1)
    return torch.exp(exponent - c) / math.sqrt(projection.shape[0]), eps * torch.exp(-c[..., 0])


def naive_favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                          initial_state: LinearState | None = None, eps: float = 1e-6
                          ) -> tuple[torch.Tensor, LinearState]:
    """Causal FAVOR+, one token at a time in at least fp32, as in the paper's prefix-sum formulation."""
    cd = promote(q)
    q, k, v, projection = q.to(cd), k.to(cd), v.to(cd), projection.to(cd)
    (pq, eps_q), pk = favor_query_features(q, projection, eps), favor_features(k, projection)  # (B, T, H, m)
    B, T, H, m = pq.shape
    if initial_state is None:
        S, z = pq.new_zeros(B, H, m, v.shape[-1]), pq.new_zeros(B, H, m)
    else:
        S, z = (s.to(cd) for s in initial_state)
    out = torch.zeros_like(v)
    for t in range(T):
        S = S + torch.einsum("bhm,bhv->bhmv", pk[:, t], v[:, t])  # S_t = sum_{s<=t} phi(k_s) v_s^T
        z = z + pk[:, t]  # z_t = sum_{s<=t} phi(k_s)
        num = torch.einsum("bhm,bhmv->bhv", pq[:, t], S)
        den = torch.einsum("bhm,bhm->bh", pq[:, t], z)[..., None] + eps_q[:, t, :, None]
        out[:, t] = num / den
    return out, (S, z)


def chunk_favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                          initial_state: LinearState | None = None, chunk_size: int = 64, eps: float = 1e-6
                          ) -> tuple[torch.Tensor, LinearState]:
    """Causal FAVOR+, chunkwise parallel: O(T C m + T m d) time, O(T m + (T/C) m d) memory."""
    (pq, eps_q), pk = favor_query_features(q, projection, eps), favor_features(k, projection)
    o, (S, z) = chunk_linear_attention(pq, pk, v, initial_state, chunk_size=chunk_size, eps=eps_q)
    return o.to(q.dtype), (S.to(q.dtype), z.to(q.dtype))


def favor_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                         state: LinearState, eps: float = 1e-6) -> tuple[torch.Tensor, LinearState]:
    """One decoding step. q, k: (B, H, D); v: (B, H, D_v) -> (o: (B, H, D_v), state)."""
    pq, eps_q = (t[:, 0] for t in favor_query_features(q[:, None], projection, eps))  # (B, H, m), (B, H)
    pk = favor_features(k[:, None], projection)[:, 0]
    o, (S, z) = linear_attention_step(pq, pk, v, state, eps=eps_q)
    return o.to(q.dtype), (S.to(q.dtype), z.to(q.dtype))


def bidirectional_favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                                  eps: float = 1e-6) -> torch.Tensor:
    """Non-causal FAVOR+: phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1 + eps). O(T m d)."""
    (pq, eps_q), pk = favor_query_features(q, projection, eps), favor_features(k, projection)
    return bidirectional_linear_attention(pq, pk, v, eps=eps_q).to(q.dtype)


def naive_bidirectional_favor_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
                                        eps: float = 1e-6) -> torch.Tensor:
    """Oracle for the non-causal form: per query, the feature-kernel-weighted average of all values, in at least
    fp32."""
    cd = promote(q)
    q, k, v, projection = q.to(cd), k.to(cd), v.to(cd), projection.to(cd)
    (pq, eps_q), pk = favor_query_features(q, projection, eps), favor_features(k, projection)
    out = torch.zeros_like(v)
    for t in range(q.shape[1]):
        w = torch.einsum("bhm,bshm->bsh", pq[:, t], pk)  # (B, S, H): phi(q_t) . phi(k_s) ~ exp(q_t . k_s / sqrt(d))
        out[:, t] = torch.einsum("bsh,bshv->bhv", w, v) / (w.sum(1)[..., None] + eps_q[:, t, :, None])
    return out


def favor_error_table(n_features: tuple[int, ...] = (16, 64, 256), n: int = 128, head_dim: int = 32,
                      seeds: tuple[int, ...] = (0, 1, 2, 3, 4), causal: bool = True, qk_scale: float = 0.5
                      ) -> list[dict]:
    """Relative error ||o - o_exact|| / ||o_exact|| of FAVOR+ against exact softmax attention, per number of random
    features, averaged over ``seeds`` (each seed draws new inputs and new features): q, k ~ N(0, qk_scale^2),
    v ~ N(0, 1), of shape (1, n, 1, head_dim). The estimator's variance grows like exp(|q + k|^2 / sqrt(d)), so the
    error depends strongly on qk_scale: at 1.0 (logits of unit variance in d=32) hundreds of features are far from
    enough; at 0.5 the error falls roughly like 1/sqrt(m)."""
    from .softmax_attention import softmax_attention

    rows = []
    for m in n_features:
        errors = []
        for seed in seeds:
            g = torch.Generator().manual_seed(seed)
            q, k, v = (torch.randn(1, n, 1, head_dim, generator=g) for _ in range(3))
            q, k = q * qk_scale, k * qk_scale
            projection = orthogonal_random_features(m, head_dim, g)
            exact = softmax_attention(q, k, v, causal=causal)
            if causal:
                approx, _ = chunk_favor_attention(q, k, v, projection)
            else:
                approx = bidirectional_favor_attention(q, k, v, projection)
            errors.append(float((approx - exact).norm() / exact.norm()))
        rows.append({"n": n, "head_dim": head_dim, "qk_scale": qk_scale, "n_features": m, "causal": causal,
                     "rel_error": sum(errors) / len(errors), "seeds": len(seeds)})
    return rows
