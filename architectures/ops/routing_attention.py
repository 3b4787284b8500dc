"""Routing attention (Routing Transformer, Roy et al. 2020, arXiv:2003.05997) on shared query-keys, given the
clusters.

The shared vectors are layer-normalised without scale or bias (the paper's Algorithm 1), u = LN(qk), so they lie on a
sphere of radius sqrt(d); queries and keys are both u, and a score is u_i . u_j / sqrt(d). Each token belongs to the
cluster of its nearest centroid (``assign_clusters``, spherical k-means: argmax_c u . mu_c). A query attends within
its cluster, causally by position, to at most ``window`` tokens: sorted by (cluster, position), query slot s sees the
same-cluster slots s' with s - window < s' <= s (causal: its window - 1 most recent cluster-mates), or |s - s'| <
window (bidirectional). As in shared-QK Reformer, a token attends to itself only when nothing else is visible.

Why a window rather than the paper's balanced top-k: the paper makes clusters equal by letting each centroid take its
n/k nearest tokens of the whole sequence. Whether a token is among them depends on every other token, later ones
included, so a causal layer built that way leaks the future into the routing. Assigning each token to its nearest
centroid (a decision that depends on the token alone) and capping what a query reads at the window of w = ceil(n/k)
most recent cluster-mates keeps the paper's cost, n * w = n^2 / k, exactly, whatever the cluster sizes, and is
exactly causal. For clusters no larger than w, a query sees all its earlier cluster-mates, as in the paper.

Cost: the sort is O(n log n); after it, a block of w sorted queries sees keys in its own block and the previous one
(and the next when bidirectional), so attention is O(n w d) = O(n^1.5 d) with k ~ sqrt(n) clusters, and the
assignment O(n k d) = O(n^1.5 d). ``naive_routing_attention`` is the oracle loop; ``routing_attention`` the blocked
form.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def self_score(dtype: torch.dtype) -> float:
    """A token's score for itself, used only if nothing else is visible: the most negative finite value of the dtype
    (weight exactly 0 next to any other visible key, in every dtype; a constant such as -1e5 is -inf in fp16)."""
    return torch.finfo(dtype).min


def normalize(qk: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer norm over the head dimension without scale and bias: (B, T, H, D) -> same, each vector of norm ~sqrt(D)."""
    return F.layer_norm(qk, qk.shape[-1:], eps=eps)


def assign_clusters(u: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """u: (B, T, H, D); centroids: (H, k, D) -> the nearest centroid of each vector, (B, T, H), in fp32."""
    return torch.einsum("bthd,hkd->bthk", u.detach().float(), centroids.float()).argmax(dim=-1)


@torch.no_grad()
def kmeans_ema_update(centroids: torch.Tensor, u: torch.Tensor, clusters: torch.Tensor, decay: float
                      ) -> torch.Tensor:
    """One online (mini-batch) spherical k-means step, as the paper's exponential moving average:
    mu_c <- normalise(decay * mu_c + (1 - decay) * normalise(mean of the vectors assigned to c)); centroids that got
    no vector are unchanged. centroids: (H, k, D); u: (B, T, H, D); clusters: (B, T, H) -> new (H, k, D)."""
    H, k, D = centroids.shape
    flat_u = u.detach().float().permute(2, 0, 1, 3).reshape(H, -1, D)  # (H, B*T, D)
    flat_c = clusters.permute(2, 0, 1).reshape(H, -1)  # (H, B*T)
    sums = torch.zeros(H, k, D, device=u.device).scatter_add_(1, flat_c[..., None].expand(-1, -1, D), flat_u)
    counts = torch.zeros(H, k, device=u.device).scatter_add_(1, flat_c, torch.ones_like(flat_c, dtype=torch.float))
    means = F.normalize(sums / counts.clamp(min=1)[..., None], dim=-1)
    moved = F.normalize(decay * centroids.float() + (1 - decay) * means, dim=-1)
    return torch.where(counts[..., None] > 0, moved, centroids.float()).to(centroids.dtype)


def naive_routing_attention(u: torch.Tensor, v: torch.Tensor, clusters: torch.Tensor, *, window: int, causal: bool
                            ) -> torch.Tensor:
    """The oracle, in fp32: per query, its cluster-mates within `window` of it in cluster order (earlier ones only if
    causal), itself only if there is no other; one softmax over them."""
    u, v = u.float(), v.float()
    B, T, H, D = u.shape
    out = torch.zeros(B, T, H, v.shape[-1])
    for b in range(B):
        for h in range(H):
            for i in range(T):
                mates = [j for j in range(T) if clusters[b, j, h] == clusters[b, i, h]]  # by position
                r = mates.index(i)
                if causal:
                    visible = [j for n, j in enumerate(mates) if r - window < n <= r]
                else:
                    visible = [j for n, j in enumerate(mates) if abs(n - r) < window]
                others = [j for j in visible if j != i]
                idx = torch.tensor(others if others else [i])
                scores = u[b, idx, h] @ u[b, i, h] / math.sqrt(D)
                out[b, i, h] = scores.softmax(-1) @ v[b, idx, h]
    return out


def _blocks(x: torch.Tensor, w: int, after: int, fill) -> torch.Tensor:
    """x: (B, H, n * w, *F) -> (B, H, n, (2 + after) * w, *F): each block with the previous one (and the next)."""
    B, H, Tp, *feat = x.shape
    n = Tp // w
    x = torch.cat([x.new_full((B, H, w, *feat), fill), x, x.new_full((B, H, after * w, *feat), fill)], dim=2)
    x = x.view(B, H, n + 1 + after, w, *feat)  # (B, H, blocks incl. padding, w, *F)
    return torch.cat([x[:, :, i:i + n] for i in range(2 + after)], dim=3)  # (B, H, n, W, *F)


def routing_attention(u: torch.Tensor, v: torch.Tensor, clusters: torch.Tensor, *, window: int, causal: bool
                      ) -> torch.Tensor:
    """Blocked form. u: (B, T, H, D) normalised shared query-keys; v: (B, T, H, Dv); clusters: (B, T, H)."""
    B, T, H, D = u.shape
    Dv = v.shape[-1]
    w = window
    n = -(-T // w)
    pad = n * w - T
    dev = u.device
    clusters = clusters.permute(0, 2, 1)  # (B, H, T)
    pos = torch.arange(T, device=dev)
    order = torch.argsort(clusters * T + pos, dim=-1)  # (B, H, T): sort by (cluster, position), O(n log n)
    su = u.permute(0, 2, 1, 3).gather(2, order[..., None].expand(B, H, T, D))  # (B, H, T, D) in cluster order
    sv = v.permute(0, 2, 1, 3).gather(2, order[..., None].expand(B, H, T, Dv))
    sc = clusters.gather(-1, order)  # (B, H, T)
    slot = pos.expand(B, H, T)
    if pad:
        su, sv = (torch.cat([t, t.new_zeros(B, H, pad, t.shape[-1])], dim=2) for t in (su, sv))
        sc = torch.cat([sc, sc.new_full((B, H, pad), -1)], dim=2)
        slot = torch.cat([slot, slot.new_full((B, H, pad), -1)], dim=2)
    after = 0 if causal else 1
    q_b = su.view(B, H, n, w, D)  # (B, H, n, w, D)
    q_slot, q_c = slot.view(B, H, n, w), sc.view(B, H, n, w)
    k_b, v_b = _blocks(su, w, after, 0.0), _blocks(sv, w, after, 0.0)  # (B, H, n, W, D)
    k_slot, k_c = _blocks(slot, w, after, -1), _blocks(sc, w, after, -1)  # (B, H, n, W)
    dist = q_slot[..., :, None] - k_slot[..., None, :]  # (B, H, n, w, W): slot distance
    visible = (k_slot[..., None, :] >= 0) & (q_c[..., :, None] == k_c[..., None, :]) & (dist < w)
    visible = visible & ((dist >= 0) if causal else (dist > -w))
    scores = q_b @ k_b.transpose(-2, -1) / math.sqrt(D)  # (B, H, n, w, W)
    scores = scores.masked_fill(~visible, float("-inf"))
    scores = scores.masked_fill(visible & (dist == 0), self_score(scores.dtype))
    scores = scores.masked_fill((q_slot < 0)[..., None], 0.0)  # padding queries: finite rows, cut off below
    o = scores.softmax(dim=-1) @ v_b  # (B, H, n, w, Dv)
    o = o.reshape(B, H, n * w, Dv)[:, :, :T]  # (B, H, T, Dv) in cluster order
    inv = torch.argsort(order, dim=-1)  # slot of each position
    out = o.gather(2, inv[..., None].expand(B, H, T, Dv))  # (B, H, T, Dv) back to positions
    return out.permute(0, 2, 1, 3)  # (B, T, H, Dv)


# ---- catalogue entries (op_speed, and the operator-scope scaling entry of long_context) -----------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("clustering", fast="blocked")
def make_routing_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                        generator: torch.Generator) -> dict:
    """Normalised shared query-keys u and values v (B, T, H, D), and k = round(sqrt(T)) unit centroids per head
    (the clustering mixer's defaults): the op assigns clusters (O(n k d)) and attends within them (O(n w d),
    w = ceil(T / k))."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)
    k = max(1, round(math.sqrt(T)))
    return {"u": normalize(randn(B, T, H, D)), "v": randn(B, T, H, D),
            "centroids": F.normalize(randn(H, k, D), dim=-1), "window": -(-T // k)}


@register_op_impl("clustering", "blocked", source="ours")
def _routing_blocked(inputs: dict) -> torch.Tensor:
    clusters = assign_clusters(inputs["u"], inputs["centroids"])
    return routing_attention(inputs["u"], inputs["v"], clusters, window=inputs["window"], causal=True)


@register_op_impl("clustering", "naive", source="ours")
def _routing_naive(inputs: dict) -> torch.Tensor:
    clusters = assign_clusters(inputs["u"], inputs["centroids"])
    return naive_routing_attention(inputs["u"], inputs["v"], clusters, window=inputs["window"], causal=True)
