"""Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, section 2.1; DeepSeek-V3, arXiv:2412.19437).

Keys and values of all heads are up-projections of one shared latent per token, c_j (d_c), and a decoupled RoPE key
k^R_j (d_rope) is shared by all heads:

    k_{j,h} = [W_UK_h c_j ; k^R_j]      v_{j,h} = W_UV_h c_j      q_{i,h} = [q^C_{i,h} ; q^R_{i,h}]
    o_{i,h} = sum_j softmax_j(q_{i,h} . k_{j,h} * scale) v_{j,h}

so only (c_j, k^R_j), d_c + d_rope numbers per token, need caching. Shapes: q_nope (B, T, H, D_nope), q_rope
(B, T, H, D_rope), c_kv (B, S, d_c), k_rope (B, S, D_rope), w_uk (H, D_nope, d_c), w_uv (H, D_v, d_c) -> (B, T, H, D_v).
With causal=True and S > T the queries are the last T positions (decoding against a cache).

- ``naive_latent_attention``: the oracle loop, keys and values up-projected per (token, head) as in the formula.
- ``latent_attention``: the training/prefill form (DeepSeek's "naive" mode): per-head keys and values are expanded
  once for all tokens, then exact attention with the (T, S) score matrix: O(T S H (D_nope + D_rope + D_v)).
- ``absorbed_latent_attention``: the decoding form (DeepSeek's "absorb" mode): W_UK is absorbed into the query,
  q_{i,h}^T W_UK_h c_j = (W_UK_h^T q_{i,h}) . c_j, and W_UV into the output, sum_j p_j W_UV_h c_j =
  W_UV_h (sum_j p_j c_j): the cache is read as it is, never expanded into per-head keys or values.
"""
from __future__ import annotations

import torch

from .. import flop_notes


def _visible(T: int, S: int, causal: bool, device: torch.device) -> torch.Tensor | None:
    if not causal:
        return None
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)  # query t is at position S - T + t


def naive_latent_attention(q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor, k_rope: torch.Tensor,
                           w_uk: torch.Tensor, w_uv: torch.Tensor, *, causal: bool, scale: float) -> torch.Tensor:
    q_nope, q_rope, c_kv, k_rope, w_uk, w_uv = (t.float() for t in (q_nope, q_rope, c_kv, k_rope, w_uk, w_uv))
    B, T, H, _ = q_nope.shape
    S = c_kv.shape[1]
    out = torch.zeros(B, T, H, w_uv.shape[1])
    for t in range(T):
        pos = S - T + t
        idx = torch.arange(pos + 1) if causal else torch.arange(S)  # the visible keys
        for h in range(H):
            k = torch.cat([c_kv[:, idx] @ w_uk[h].T, k_rope[:, idx]], dim=-1)  # (B, |visible|, D_nope + D_rope)
            v = c_kv[:, idx] @ w_uv[h].T  # (B, |visible|, D_v)
            q = torch.cat([q_nope[:, t, h], q_rope[:, t, h]], dim=-1)  # (B, D_nope + D_rope)
            p = (torch.einsum("bd,bsd->bs", q, k) * scale).softmax(dim=-1)
            out[:, t, h] = torch.einsum("bs,bsd->bd", p, v)
    return out


def latent_attention(q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor, k_rope: torch.Tensor,
                     w_uk: torch.Tensor, w_uv: torch.Tensor, *, causal: bool, scale: float) -> torch.Tensor:
    B, T, H, _ = q_nope.shape
    S = c_kv.shape[1]
    k_nope = torch.einsum("bsc,hdc->bhsd", c_kv, w_uk)  # (B, H, S, D_nope): the expanded per-head keys
    k_rope = k_rope[:, None].expand(B, H, S, k_rope.shape[-1])  # the shared RoPE key, read by every head
    k = torch.cat([k_nope, k_rope], dim=-1)  # (B, H, S, D_nope + D_rope)
    v = torch.einsum("bsc,hdc->bhsd", c_kv, w_uv)  # (B, H, S, D_v)
    q = torch.cat([q_nope, q_rope], dim=-1).transpose(1, 2) * scale  # (B, H, T, D_nope + D_rope)
    scores = q @ k.transpose(-2, -1)  # (B, H, T, S): the n x n matrix of every head
    visible = _visible(T, S, causal, scores.device)
    if visible is not None:
        flop_notes.masked_scores(scores, kept=visible, d_qk=q.shape[-1], d_v=v.shape[-1])
        scores = scores.masked_fill(~visible, float("-inf"))
    out = scores.softmax(dim=-1) @ v  # (B, H, T, D_v)
    return out.transpose(1, 2)  # (B, T, H, D_v)


def absorbed_latent_attention(q_nope: torch.Tensor, q_rope: torch.Tensor, c_kv: torch.Tensor, k_rope: torch.Tensor,
                              w_uk: torch.Tensor, w_uv: torch.Tensor, *, causal: bool, scale: float) -> torch.Tensor:
    B, T, H, _ = q_nope.shape
    S = c_kv.shape[1]
    # W_UK absorbed into the query: (B, T, H, D_nope) -> (B, H*T, d_c). The heads are stacked along the query axis so
    # that every head reads the one latent cache as it is (a broadcast over heads would copy it per head).
    q_latent = torch.einsum("bthd,hdc->bhtc", q_nope, w_uk).reshape(B, H * T, -1)
    q_r = q_rope.transpose(1, 2).reshape(B, H * T, -1)  # (B, H*T, D_rope)
    scores = (q_latent @ c_kv.transpose(1, 2) + q_r @ k_rope.transpose(1, 2)) * scale  # (B, H*T, S)
    scores = scores.view(B, H, T, S)
    visible = _visible(T, S, causal, scores.device)
    if visible is not None:
        flop_notes.masked_scores(scores, kept=visible, d_qk=c_kv.shape[-1] + k_rope.shape[-1], d_v=c_kv.shape[-1])
        scores = scores.masked_fill(~visible, float("-inf"))
    o_latent = scores.softmax(dim=-1).view(B, H * T, S) @ c_kv  # (B, H*T, d_c): attention-weighted latents
    o_latent = o_latent.view(B, H, T, -1)
    return torch.einsum("bhtc,hdc->bthd", o_latent, w_uv)  # (B, T, H, D_v): W_UV applied after the sum
