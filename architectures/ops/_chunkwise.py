"""The chunkwise-parallel engine shared by the gated linear-attention and delta-rule operators.

One recurrence covers the five operators of this family (per batch and head; S is (D_k x D_v), q_t, k_t: (D_k,),
v_t: (D_v,), a_t = exp(g_t) the forget gate: 1 (no gate), a scalar (RetNet, Gated DeltaNet) or a D_k vector (GLA,
KDA); beta_t in (0, 1) switches on the delta rule):

    linear (retention, GLA):  S_t = diag(a_t) S_{t-1} + k_t v_t^T
    delta (DeltaNet, GDN, KDA):  S_t = (I - beta_t k_t k_t^T) diag(a_t) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t

Split the sequence into chunks of C tokens. Inside a chunk let b_t = sum_{s<=t} g_s (the cumulative log-decay from
the chunk's start, b_t <= 0 and non-increasing) and S_0 the state entering the chunk. Then

    S_t = diag(exp(b_t)) S_0 + sum_{s<=t} diag(exp(b_t - b_s)) k_s u_s^T,

where u_s = v_s for linear attention, and for the delta rule u_s = beta_s (v_s - k_s^T diag(a_s) S_{s-1}), the
"pseudo-value" (Yang et al. 2024, DeltaNet, arXiv:2406.06484). Writing A_ts = beta_t sum_d k_td k_sd
exp(b_td - b_sd) for s < t, the u of a chunk solve the unit lower-triangular system

    (I + A) u = diag(beta) (v - (k * exp(b)) S_0)   =>   u = U - W S_0,
    U = (I + A)^-1 diag(beta) v,   W = (I + A)^-1 diag(beta) (k * exp(b))   (the WY / UT-transform form),

and U, W do not depend on S_0, so they are computed for every chunk at once (``unit_lower_inverse``: forward
substitution on 16 x 16 diagonal blocks, merged blockwise with matmuls, as fla's kernels do).
With P_ts = sum_d q_td k_sd exp(b_td - b_sd) for s <= t:

    o = scale * ((q * exp(b)) S_0 + P u)            (the chunk's outputs)
    S_C = diag(exp(b_C)) S_0 + (k * exp(b_C - b))^T u   (the state entering the next chunk).

Only the last line is a recurrence over chunks: a short Python loop of T/C steps of (D_k x D_v) updates (plus
u = U - W S_0 for the delta rule); everything else is batched matrix products over all chunks at once.

Numerical stability: every exponential is of a difference b_t - b_s with s <= t (or of b_t itself), so its
argument is <= 0; entries outside the causal mask are clamped to 0 before ``exp`` and zeroed after. For channel-wise
gates P and A need exp(b_td - b_sd) per channel, which cannot be split into a query factor and a key factor both
<= 1 over a whole chunk; ``decayed_scores`` halves the chunk recursively and factors each cross block through the
boundary between its halves (two factors <= 1, then a matmul), in the spirit of GLA's secondary-level chunking
(Yang et al. 2023, arXiv:2312.06635), at O(C D_k log C) elementwise work per chunk.

Cost for T tokens: O(T C (D_k + D_v) + T D_k D_v) time (+ O(T D_k log C) for channel-wise gates) and
O(T (C + D_k + D_v) + (T / C) D_k D_v) memory: linear in T for a fixed chunk size.

The default chunk is 32 tokens (fla's GPU kernels use 64, a tensor-core tile): on CPU the in-chunk products grow
with C per token while the state passing shrinks with it, and at D = 64, T = 4096 chunks of 32 measured 0-15 %
faster than 64 (16 to 64 are within 20 %).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


# Exponents of decays are floored at -40 (exp(-40) = 4e-18): a contribution that small is below fp32 resolution next
# to the undecayed terms of the same sum, and the floor keeps the CPU's vectorised exp and the matmuls on their fast
# paths (arguments whose exp underflows take a scalar slow path, 10-30x slower, and denormal products are slower
# still). Gradients through floored entries are zero instead of < 4e-18.
LOG_FLOOR = -40.0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Gates and accumulations run in at least fp32 (bf16 inputs are computed in fp32 and cast back)."""
    return torch.promote_types(dtype, torch.float32)


def _to_chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """(B, T, H, ...) -> (n, B*H, C, ...), contiguous (each chunk's slice is one block of memory), zero-padding T
    to n*C."""
    B, T, H = x.shape[:3]
    rest = x.shape[3:]
    n = -(-T // C)
    if n * C != T:
        x = F.pad(x, (0, 0) * len(rest) + (0, 0, 0, n * C - T))  # pad dim 1 (time) at the end
    x = x.reshape(B, n, C, H, *rest).transpose(0, 1).transpose(2, 3)  # (n, B, H, C, ...)
    return x.contiguous().view(n, B * H, C, *rest)  # (n, B*H, C, ...)


def causal_mask(C: int, device: torch.device, strict: bool = False) -> torch.Tensor:
    """(C, C) boolean, True where key position s may reach query position t: s <= t (s < t if strict)."""
    return torch.ones(C, C, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def decay(log_decay: torch.Tensor) -> torch.Tensor:
    """exp of a log-decay (an argument <= 0), floored at exp(LOG_FLOOR); see LOG_FLOOR."""
    return log_decay.clamp(min=LOG_FLOOR).exp_()


def decay_(log_decay: torch.Tensor) -> torch.Tensor:
    """The same, in place on a fresh tensor."""
    return log_decay.clamp_(min=LOG_FLOOR).exp_()


def masked_decay_(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """In place on a fresh tensor of log-decay differences: exp where ``mask`` (there diff <= 0), exactly 0 elsewhere.
    Clamping first keeps every argument in [LOG_FLOOR, 0], also where the mask discards it."""
    return torch.where(mask, diff.clamp_(LOG_FLOOR, 0.0).exp_(), 0.0)


def scalar_decay_matrix(b: torch.Tensor, strict: bool = False) -> torch.Tensor:
    """b: (..., C) cumulative log-decays -> (..., C, C) with exp(b_t - b_s) for s <= t (s < t if strict), else 0."""
    diff = b[..., :, None] - b[..., None, :]  # (..., C_t, C_s)
    return masked_decay_(diff, causal_mask(b.shape[-1], b.device, strict))


def decayed_scores(xs: tuple[torch.Tensor, ...], y: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """For each x in ``xs``: M_ts = sum_d x_td y_sd exp(b_td - b_sd) for s <= t, else 0 (channel-wise decays).

    x, y, b: (..., C, K) with b non-increasing along C. Built by halving: a block of 2w tokens is a left half
    (keys) and a right half (queries) around the boundary r = b at the last token of the left half, and for t on
    the right, s on the left, exp(b_t - b_s) = exp(b_t - r) exp(r - b_s) with both factors <= 1, so the cross block
    is one matmul of rescaled queries and keys. Each level rescales every token once: O(C K log C) elementwise work
    per chunk instead of the O(C^2 K) decay tensor. The halving stops at the odd part c0 of C, whose (c0, c0, K)
    decay tensors are formed directly (c0 = 1 for a power-of-two chunk). Returns a list of (..., C, C).
    """
    *lead, C, K = y.shape
    Ms = [y.new_zeros(*lead, C, C) for _ in xs]  # filled block by block: leaves on the diagonal, then cross blocks
    c0 = C // (C & -C)  # the odd part of C: the leaf block size
    nl = C // c0
    if c0 == 1:
        for x, M in zip(xs, Ms):
            torch.diagonal(M, dim1=-2, dim2=-1).copy_((x * y).sum(-1))  # x_t . y_t, no decay
    else:
        bs, ys = b.reshape(*lead, nl, c0, K), y.reshape(*lead, nl, c0, K)  # (..., nl, c0, K)
        diff = bs[..., :, :, None, :] - bs[..., :, None, :, :]  # (..., nl, c0_t, c0_s, K)
        y_leaf = masked_decay_(diff, causal_mask(c0, y.device)[..., None]) * ys[..., :, None, :, :]
        for x, M in zip(xs, Ms):
            leaf = (y_leaf @ x.reshape(*lead, nl, c0, K, 1))[..., 0]  # (..., nl, c0_t, c0_s)
            _diagonal_blocks(M, nl, 1, c0)[..., 0, :, 0, :, :].copy_(leaf.movedim(-3, -1))
    w = c0
    while w < C:
        nb = C // (2 * w)
        b2 = b.reshape(*lead, nb, 2, w, K)  # (..., nb, 2, w, K): left and right halves of each block
        r = b2[..., 0, -1:, :]  # (..., nb, 1, K): b at the last token of the left half
        y_left = y.reshape(*lead, nb, 2, w, K)[..., 0, :, :] * decay_(r - b2[..., 0, :, :])  # exp(r - b_s) <= 1
        to_right = decay_(b2[..., 1, :, :] - r)  # (..., nb, w, K): exp(b_t - r) <= 1
        for x, M in zip(xs, Ms):
            x_right = x.reshape(*lead, nb, 2, w, K)[..., 1, :, :] * to_right
            cross = x_right @ y_left.transpose(-1, -2)  # (..., nb, w_t, w_s)
            _diagonal_blocks(M, nb, 2, w)[..., 1, :, 0, :, :].copy_(cross.movedim(-3, -1))
        w *= 2
    return Ms


def _diagonal_blocks(M: torch.Tensor, nb: int, halves: int, w: int) -> torch.Tensor:
    """A view of M (..., C, C), C = nb * halves * w, as its nb diagonal blocks of size (halves * w)^2, each split
    into halves x halves sub-blocks of w x w: (..., halves_t, w_t, halves_s, w_s, nb)."""
    view = M.view(*M.shape[:-2], nb, halves, w, nb, halves, w)
    return torch.diagonal(view, dim1=-6, dim2=-3)


def unit_lower_inverse(A: torch.Tensor, block: int = 16) -> torch.Tensor:
    """(I + L)^-1 for L the strictly lower-triangular part of A (..., C, C) (the rest of A is not read).

    Blockwise: [[I + L11, 0], [L21, I + L22]]^-1 = [[T11, 0], [-T22 L21 T11, T22]], recursively, down to blocks of
    at most ``block`` rows inverted by ``torch.linalg.solve_triangular`` (forward substitution) against the identity.
    On CPU this is about 3x faster than one triangular solve per (C x C) system with D_k + D_v right-hand sides,
    and the inverse is then applied with plain matmuls.
    """
    C = A.shape[-1]
    if C <= block:
        eye = torch.eye(C, dtype=A.dtype, device=A.device).expand_as(A)
        return torch.linalg.solve_triangular(A, eye, upper=False, unitriangular=True)
    h = C // 2
    T11, T22 = unit_lower_inverse(A[..., :h, :h], block), unit_lower_inverse(A[..., h:, h:], block)
    T21 = -(T22 @ (A[..., h:, :h] @ T11))  # (..., C - h, h)
    top = F.pad(T11, (0, C - h))  # (..., h, C): zeros right of the diagonal block
    return torch.cat([top, torch.cat([T21, T22], dim=-1)], dim=-2)


def chunkwise_recurrence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None = None,
                         beta: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                         scale: float | None = None, chunk_size: int = 32
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise-parallel form of the recurrence in the module docstring.

    q, k: (B, T, H, K); v: (B, T, H, V); g: None, (B, T, H) scalar or (B, T, H, K) channel-wise log forget gates
    (<= 0); beta: None (linear attention) or (B, T, H) (delta rule); initial_state: (B, H, K, V).
    Returns out (B, T, H, V) in q's dtype and the final state (B, H, K, V) in q's dtype.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    dtype, cd = q.dtype, compute_dtype(q.dtype)
    scale = K ** -0.5 if scale is None else scale
    q, k, v = (_to_chunks(t.to(cd), C) for t in (q, k, v))  # (n, BH, C, K|V); padded tokens are zeros
    n = q.shape[0]
    channelwise = g is not None and g.dim() == 4

    # Decays inside each chunk from the cumulative log-gates b (padding has g = 0: no decay, and k = v = 0: no write).
    if g is None:  # no forgetting (DeltaNet): every decay is 1
        b = chunk_decay = None
        q_in, k_out, k_dec = q * scale, k, k
    else:
        b = _to_chunks(g.to(cd), C).cumsum(dim=2)  # (n, BH, C) or (n, BH, C, K)
        b = b if channelwise else b[..., None]  # (n, BH, C, 1 or K)
        b_last = b[:, :, -1:]  # (n, BH, 1, 1 or K): log-decay over the whole chunk
        decay_in = decay(b)  # (n, BH, C, 1 or K): exp(b_t), from the chunk's start to t
        q_in = q * (decay_in * scale)  # q_t exp(b_t) scale: reads the state entering the chunk
        k_out = k * decay_(b_last - b)  # k_s exp(b_C - b_s): writes into the state leaving it
        k_dec = None if beta is None else k * decay_in  # k_t exp(b_t): what the state entering the chunk reads
        chunk_decay = decay(b_last).transpose(-1, -2)  # (n, BH, 1 or K, 1)

    # In-chunk scores, P (q with k, s <= t; unscaled) and, for the delta rule, A (k with k; only s < t is read).
    if channelwise:
        scores = decayed_scores((q,) if beta is None else (q, k), k, b)
        P, A = scores[0], scores[-1]
    else:
        P = q @ k.transpose(-1, -2)  # (n, BH, C, C)
        A = None if beta is None else k @ k.transpose(-1, -2)
        if b is None:
            P = P.tril_()
        else:
            D = scalar_decay_matrix(b[..., 0])  # (n, BH, C, C): exp(b_t - b_s), s <= t
            P, A = P * D, (None if A is None else A * D)

    if beta is None:
        U, W = v, None
    else:
        beta = _to_chunks(beta.to(cd), C)[..., None]  # (n, BH, C, 1)
        A = beta * A  # (n, BH, C, C): beta_t sum_d k_td k_sd exp(b_td - b_sd); diagonal and s > t not read
        T_inv = unit_lower_inverse(A)  # (n, BH, C, C): (I + strictly-lower part of A)^-1
        U = T_inv @ (beta * v)  # (n, BH, C, V)
        W = T_inv @ (beta * k_dec)  # (n, BH, C, K)

    # The recurrence over chunks, a short loop of (D_k x D_v) updates; everything else is batched over chunks. The
    # per-chunk operands are unbound once: indexing them inside the loop would cost a full-size zero gradient per
    # chunk in the backward pass (O(n^2) for n chunks).
    S = q.new_zeros(B * H, K, V) if initial_state is None else initial_state.to(cd).reshape(B * H, K, V)
    decays = [None] * n if chunk_decay is None else chunk_decay.unbind(0)
    if W is None:  # S_(i+1) = diag(exp(b_C)) S_i + k_out^T v: an elementwise update of precomputed writes
        kv = k_out.transpose(-1, -2) @ U  # (n, BH, K, V): each chunk's write, computed for all at once
        if torch.is_grad_enabled():
            states = []
            for kv_i, decay_i in zip(kv.unbind(0), decays):
                states.append(S)
                S = kv_i + S if decay_i is None else torch.addcmul(kv_i, decay_i, S)
            S_in = torch.stack(states)  # (n, BH, K, V): the state entering each chunk
        else:  # the same, written in place into one buffer (inference: no graph to keep)
            S_in = torch.empty_like(kv)
            S_in[0] = S
            for i in range(n):
                S = S_in[i + 1] if i + 1 < n else torch.empty_like(S)
                torch.add(kv[i], S_in[i], out=S) if decays[i] is None else \
                    torch.addcmul(kv[i], decays[i], S_in[i], out=S)
        u = U
    else:  # u_i = U_i - W_i S_i, S_(i+1) = diag(exp(b_C)) S_i + k_out^T u_i
        k_out_t = k_out.transpose(-1, -2).contiguous()  # (n, BH, K, C)
        if torch.is_grad_enabled():
            states, us = [], []
            for U_i, W_i, k_i, decay_i in zip(U.unbind(0), W.unbind(0), k_out_t.unbind(0), decays):
                states.append(S)
                us.append(torch.baddbmm(U_i, W_i, S, alpha=-1.0))  # (BH, C, V)
                S = torch.baddbmm(S if decay_i is None else decay_i * S, k_i, us[-1])
            u = torch.stack(us)  # (n, BH, C, V): the pseudo-values
            S_in = torch.stack(states)  # (n, BH, K, V): the state entering each chunk
        else:  # the same, written in place into buffers (inference: no graph to keep)
            u, S_in = torch.empty_like(U), U.new_empty(n, B * H, K, V)
            S_in[0] = S
            for i in range(n):
                torch.baddbmm(U[i], W[i], S_in[i], alpha=-1.0, out=u[i])
                S = S_in[i + 1] if i + 1 < n else torch.empty_like(S)
                decayed = S_in[i] if decays[i] is None else decays[i] * S_in[i]
                torch.baddbmm(decayed, k_out_t[i], u[i], out=S)

    out = torch.baddbmm((q_in @ S_in).flatten(0, 1), P.flatten(0, 1), u.flatten(0, 1), alpha=scale)  # (n*BH, C, V)
    out = out.view(n, B, H, C, V).permute(1, 0, 3, 2, 4).reshape(B, n * C, H, V)[:, :T]  # (B, T, H, V)
    return out.to(dtype), S.reshape(B, H, K, V).to(dtype)
