"""Linformer attention (Wang et al. 2020, arXiv:2006.04768): keys and values are projected along the sequence to k
rows by learned (n x k) matrices E and F, then every query attends to those k rows:

    head = softmax(Q (E^T K)^T / sqrt(d)) (F^T V)          Q: (n, d),  E^T K, F^T V: (k, d)

O(n k d) time and O(n k) memory. Every output mixes every position (the projections sum over the whole sequence), so
the method is bidirectional only. ``naive_linformer_attention`` is the oracle loop; ``linformer_attention`` the
batched form. ``linformer_error_table`` measures the approximation error against exact attention as a function of k.
"""
from __future__ import annotations

import math

import torch

from .softmax_attention import softmax_attention


def naive_linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e_proj: torch.Tensor,
                              f_proj: torch.Tensor) -> torch.Tensor:
    """q, k, v: (B, T, H, D); e_proj, f_proj: (T, k) shared by the heads. Loops in fp32, as the paper writes it."""
    q, k, v, e_proj, f_proj = q.float(), k.float(), v.float(), e_proj.float(), f_proj.float()
    B, T, H, D = q.shape
    n_rows = e_proj.shape[1]
    k_bar = torch.zeros(B, n_rows, H, D)
    v_bar = torch.zeros(B, n_rows, H, v.shape[-1])
    for j in range(n_rows):  # row j of E^T K is sum_t E[t, j] k_t
        k_bar[:, j] = (e_proj[:, j, None, None] * k).sum(1)
        v_bar[:, j] = (f_proj[:, j, None, None] * v).sum(1)
    out = torch.zeros(B, T, H, v.shape[-1])
    for t in range(T):
        for h in range(H):
            scores = torch.einsum("bd,bjd->bj", q[:, t, h], k_bar[:, :, h]) / math.sqrt(D)  # (B, k)
            out[:, t, h] = torch.einsum("bj,bjd->bd", scores.softmax(-1), v_bar[:, :, h])
    return out


def linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e_proj: torch.Tensor,
                        f_proj: torch.Tensor) -> torch.Tensor:
    """Batched form: project K, V to (B, k, H, D), then explicit attention of T queries over k rows."""
    k_bar = torch.einsum("tj,bthd->bjhd", e_proj, k)  # (B, k, H, D)
    v_bar = torch.einsum("tj,bthd->bjhd", f_proj, v)  # (B, k, H, Dv)
    return softmax_attention(q, k_bar, v_bar, causal=False)  # scores (B, H, T, k)


def mean_pooling_projection(n: int, proj_len: int) -> torch.Tensor:
    """(n, k): row j of E^T K (F^T V) is the mean of the keys (values) in the j-th of k equal segments, the paper's
    "pooling" alternative to a learned projection. The log of the segment length that a pooled key would need in the
    logits to stand for its whole segment is the same for every segment (to within one position when k does not
    divide n), so it cancels in the softmax."""
    segment = torch.arange(n) * proj_len // n  # segment of each position
    e = torch.zeros(n, proj_len)
    e[torch.arange(n), segment] = 1.0
    return e / e.sum(0, keepdim=True)


def linformer_error_table(n: int = 256, ks: tuple[int, ...] = (16, 32, 64, 128, 256), head_dim: int = 32,
                          seeds: tuple[int, ...] = (0, 1, 2), qk_scale: float = 0.5) -> list[dict]:
    """Relative error ||o - o_exact|| / ||o_exact|| of Linformer attention against exact bidirectional attention,
    averaged over ``seeds``; inputs q, k ~ N(0, qk_scale^2), v ~ N(0, 1), of shape (1, n, 1, head_dim), i.i.d. over
    positions (no low-rank structure: the worst case for the method).

    Per k, two projections: E, F ~ N(0, 1/k) as at initialisation (the paper's Theorem 2 construction with
    delta = 1, untrained) and segment mean pooling (``mean_pooling_projection``). A last row is k = n with E = F = I,
    which reproduces exact attention. Learned projections on real data, which the paper's quality claim is about,
    are not measured here.
    """
    rows = []
    for proj_len in ks:
        for kind in ("random N(0, 1/k)", "mean pooling"):
            errors = []
            for seed in seeds:
                g = torch.Generator().manual_seed(seed)
                q, k, v = (torch.randn(1, n, 1, head_dim, generator=g) for _ in range(3))
                q, k = q * qk_scale, k * qk_scale
                if kind == "mean pooling":
                    e = f = mean_pooling_projection(n, proj_len)
                else:
                    e = torch.randn(n, proj_len, generator=g) / math.sqrt(proj_len)
                    f = torch.randn(n, proj_len, generator=g) / math.sqrt(proj_len)
                exact = softmax_attention(q, k, v, causal=False)
                errors.append(float((linformer_attention(q, k, v, e, f) - exact).norm() / exact.norm()))
            rows.append({"n": n, "k": proj_len, "projection": kind, "qk_scale": qk_scale,
                         "rel_error": sum(errors) / len(errors)})
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 1, head_dim, generator=g) for _ in range(3))
    eye = torch.eye(n)
    exact = softmax_attention(q, k, v, causal=False)
    rows.append({"n": n, "k": n, "projection": "identity", "qk_scale": 1.0,
                 "rel_error": float((linformer_attention(q, k, v, eye, eye) - exact).norm() / exact.norm())})
    return rows
