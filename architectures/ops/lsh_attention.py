"""LSH attention (Reformer, Kitaev et al. 2020, arXiv:2001.04451) on shared query-keys, given the hash buckets.

Shared QK: a token's query is its projected vector qk, its key the same vector normalised to unit length
(``normalize_keys``: qk / rms(qk) / sqrt(d), as in trax and Hugging Face), so a score is q_i . k_j = q_i . qk_j/|qk_j|.

Hashing (``lsh_hash``): angular LSH with a random projection R (d x b/2) per head and round: h(x) = argmax [xR; -xR].

The pattern of one hash round r, for query i (the paper's P_i, made causal-consistent):
- tokens are sorted by (bucket, position); a token's rank in its bucket is the number of earlier tokens with the same
  bucket, and its chunk is rank // chunk_size: chunks of fixed length, counted from the start of each bucket;
- query i sees the tokens j of its own bucket whose chunk is its own or the previous one (the paper's "attend within
  the chunk and one chunk back"), and with ``causal`` only positions j <= i.
Rounds are combined as the paper does (Sec. 2.3): each round's softmax output o^(r) is weighted by
exp(z^(r) - logsumexp_r z^(r)), z^(r) the round's logsumexp, with the score of a key present in N_ij of the rounds
lowered by log N_ij; this equals one softmax over the union of the rounds' sets, each key counted once. A token attends
to itself only when nothing else is visible (its score is replaced by the most negative finite value of the dtype,
``self_score``, which gives it weight exactly 0 whenever another key is visible, in every dtype; trax and Hugging
Face use -1e5, which overflows fp16 to -inf and makes a query that sees only itself NaN).

Where this differs from the reference implementations, and why: trax and Hugging Face chunk the *globally* sorted
sequence (chunks straddle buckets, hash rounds, and wrap around) and let a query see every key of its two chunks
whatever its bucket. The keys a query then sees depend on how many tokens, including later ones, fell into earlier
buckets, so an output depends on future tokens (the causal mask only hides their values) and decoding cannot
reproduce the forward. Counting chunks from the start of each bucket keeps the paper's rule (same bucket, own chunk
and the previous one: its P_i restricted by the chunk window) and makes the pattern depend on the past only. The two
coincide when every bucket holds exactly one chunk and the reference looks back zero chunks (tests/test_reformer.py).

Cost: the sort is O(n log n); after it, query chunk g can only see keys in global chunks g-2..g (g+1 when not
causal), so attention is computed on those blocks: O(n * 3 * chunk_size * d) per round, never an n x n matrix.
``naive_lsh_attention`` is the oracle loop; ``lsh_attention`` the blocked form; both take the buckets as input.
"""
from __future__ import annotations

import math

import torch

def self_score(dtype: torch.dtype) -> float:
    """The score given to a token's own key, used only if nothing else is visible: the most negative finite value of
    the dtype (exp(self_score - s) is exactly 0 next to any real score s; finite, so a lone self is still a valid
    softmax; trax and Hugging Face use -1e5, which is -inf in fp16)."""
    return torch.finfo(dtype).min


def normalize_keys(qk: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Keys of shared-QK attention: qk scaled to unit length (root-mean-square normalised, then / sqrt(d))."""
    return qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + eps) / math.sqrt(qk.shape[-1])


def lsh_hash(qk: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """qk: (B, T, H, D); rotations: (H, D, n_hashes, n_buckets / 2) -> buckets (B, T, H, n_hashes) in [0, n_buckets).

    Computed in fp32 whatever the input dtype (a bucket is a discrete choice; fp32 keeps near-ties rare)."""
    rotated = torch.einsum("bthd,hdrk->bthrk", qk.detach().float(), rotations.float())  # (B, T, H, R, b/2)
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # (B, T, H, R)


def bucket_chunks(buckets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """buckets (B, T, H, R) -> each token's chunk within its bucket, rank // chunk_size (same shape), where rank is
    the number of earlier positions in the same bucket. A plain loop: the definition used by the oracles."""
    chunks = torch.empty_like(buckets)
    B, T, H, R = buckets.shape
    for b in range(B):
        for h in range(H):
            for r in range(R):
                seen: dict[int, int] = {}
                for t in range(T):
                    bucket = int(buckets[b, t, h, r])
                    chunks[b, t, h, r] = seen.get(bucket, 0) // chunk_size
                    seen[bucket] = seen.get(bucket, 0) + 1
    return chunks


def naive_lsh_attention(qk: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor, *, chunk_size: int,
                        causal: bool) -> torch.Tensor:
    """The oracle, in fp32: per query, the union over rounds of the keys of its bucket in its chunk or the previous
    one (earlier positions only if causal), itself only if that union holds nothing else; one softmax over it."""
    qk, v = qk.float(), v.float()
    B, T, H, D = qk.shape
    keys = normalize_keys(qk)
    chunks = bucket_chunks(buckets, chunk_size)
    out = torch.zeros(B, T, H, v.shape[-1])
    for b in range(B):
        for h in range(H):
            same_bucket = buckets[b, :, h, None, :] == buckets[b, None, :, h, :]  # (T, T, R): [i, j, r]
            chunk_i, chunk_j = chunks[b, :, h, None, :], chunks[b, None, :, h, :]
            in_window = same_bucket & (chunk_j <= chunk_i) & (chunk_j >= chunk_i - 1)  # (T, T, R)
            for i in range(T):
                visible = [j for j in range(T) if bool(in_window[i, j].any()) and (not causal or j <= i)]
                others = [j for j in visible if j != i]
                idx = torch.tensor(others if others else [i])
                scores = keys[b, idx, h] @ qk[b, i, h]  # (|visible|,)
                out[b, i, h] = scores.softmax(-1) @ v[b, idx, h]
    return out


def _windows(x: torch.Tensor, chunk_size: int, before: int, after: int, fill) -> torch.Tensor:
    """x: (B, H, R, n * C, *F) -> (B, H, R, n, (before + 1 + after) * C, *F): each chunk's neighbourhood, the chunks
    from `before` back to `after` ahead, padded with `fill` beyond the ends."""
    C = chunk_size
    B, H, R, Tp, *feat = x.shape
    n = Tp // C
    x = torch.cat([x.new_full((B, H, R, before * C, *feat), fill), x,
                   x.new_full((B, H, R, after * C, *feat), fill)], dim=3)
    x = x.view(B, H, R, n + before + after, C, *feat)  # (B, H, R, chunks incl. padding, C, *F)
    return torch.cat([x[:, :, :, i:i + n] for i in range(before + after + 1)], dim=4)  # (B, H, R, n, W, *F)


def _aligned(scores: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """scores (..., C, W) of a chunk's queries over its window -> (..., C, W - C): each query's row shifted so that its
    own slot is the last column but C (causal: the last). Query i of a chunk sits at window column 2C + i; every key
    it can see lies within 2C - 1 slots before it (and C - 1 after it without causality), so columns i + 1 ..
    i + W - C hold them all. Why: where the chunks fall depends on later tokens (those in earlier buckets shift every
    slot), so in the raw window a past query's keys move to other columns; a vectorised reduction adds the columns in
    lanes, and the lane a value lands in changes the rounding (up to ~3e3 ulps in fp32). Aligned, a query's keys
    always occupy the same columns, the reduction adds the same values in the same order, and past outputs are
    bitwise independent of the future."""
    C, W = chunk_size, scores.shape[-1]
    cols = torch.arange(C, device=scores.device)[:, None] + 1 + torch.arange(W - C, device=scores.device)  # (C, W-C)
    return scores.gather(-1, cols.expand(*scores.shape[:-1], W - C))


def lsh_attention(qk: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor, *, chunk_size: int, causal: bool
                  ) -> torch.Tensor:
    """Blocked form. qk: (B, T, H, D); v: (B, T, H, Dv); buckets: (B, T, H, R) -> (B, T, H, Dv)."""
    B, T, H, D = qk.shape
    R = buckets.shape[-1]
    C = chunk_size
    n = -(-T // C)
    Tp = n * C
    dev = qk.device
    buckets = buckets.permute(0, 2, 3, 1)  # (B, H, R, T)
    pos = torch.arange(T, device=dev)
    # ---- sort by (bucket, position): the O(n log n) step; then each token's chunk within its bucket -------------
    order = torch.argsort(buckets * T + pos, dim=-1)  # (B, H, R, T): positions in sorted order
    sorted_buckets = buckets.gather(-1, order)
    slot = pos  # sorted slots are numbered like positions
    first = torch.ones_like(sorted_buckets, dtype=torch.bool)
    first[..., 1:] = sorted_buckets[..., 1:] != sorted_buckets[..., :-1]  # a bucket starts at this slot
    start = torch.where(first, slot, 0).cummax(dim=-1).values  # first slot of each slot's bucket
    rank = slot - start  # (B, H, R, T): rank within the bucket, by slot
    # code = bucket * M + chunk, M > number of chunks + 1: j is in i's window of a round iff 0 <= code_i - code_j <= 1
    M = n + 2
    sorted_code = (sorted_buckets * M + rank // C).int()
    code = torch.empty_like(sorted_code).scatter_(-1, order, sorted_code)  # (B, H, R, T) by position
    # ---- gather into sorted order, pad to whole chunks ----------------------------------------------------------
    pad = Tp - T
    keys = normalize_keys(qk)
    qk_h, keys_h, v_h = (t.permute(0, 2, 1, 3) for t in (qk, keys, v))  # (B, H, T, D)
    idx = order[..., None]  # (B, H, R, T, 1)
    sq = qk_h[:, :, None].expand(B, H, R, T, D).gather(3, idx.expand(B, H, R, T, D))  # (B, H, R, T, D) sorted
    sk = keys_h[:, :, None].expand(B, H, R, T, D).gather(3, idx.expand(B, H, R, T, D))
    sv = v_h[:, :, None].expand(B, H, R, T, v.shape[-1]).gather(3, idx.expand(B, H, R, T, v.shape[-1]))
    spos = order
    # codes of every round, read at this round's sorted slots: (B, H, R, T, R') for the duplicate count
    scodes = torch.stack([code[:, :, r2, None].expand(B, H, R, T).gather(-1, order) for r2 in range(R)], dim=-1)
    if pad:
        sq, sk, sv = (torch.cat([t, t.new_zeros(B, H, R, pad, t.shape[-1])], dim=3) for t in (sq, sk, sv))
        spos = torch.cat([spos, spos.new_full((B, H, R, pad), -1)], dim=3)
        scodes = torch.cat([scodes, scodes.new_full((B, H, R, pad, R), -10)], dim=3)
    after = 0 if causal else 1
    q_c = sq.view(B, H, R, n, C, D)  # (B, H, R, n, C, D)
    qpos = spos.view(B, H, R, n, C)
    qcodes = scodes.view(B, H, R, n, C, R)
    k_w = _windows(sk, C, 2, after, 0.0)  # (B, H, R, n, W, D), W = (3 + after) * C
    v_w = _windows(sv, C, 2, after, 0.0)
    kpos = _windows(spos[..., None], C, 2, after, -1)[..., 0]  # (B, H, R, n, W)
    kcodes = _windows(scodes, C, 2, after, -10)  # (B, H, R, n, W, R')
    # ---- masks: each round's window, causality, validity; N_ij, the number of rounds whose window holds j ------
    valid = kpos[..., None, :] >= 0  # (B, H, R, n, 1, W)
    if causal:
        valid = valid & (kpos[..., None, :] <= qpos[..., :, None])  # (B, H, R, n, C, W)
    visible = torch.zeros(B, H, R, n, C, k_w.shape[4], dtype=torch.bool, device=dev)
    dup = torch.zeros(visible.shape, dtype=torch.uint8, device=dev)
    for r2 in range(R):
        d2 = qcodes[..., r2, None] - kcodes[..., None, :, r2]  # (B, H, R, n, C, W): codes of round r2
        hit = (d2 >= 0) & (d2 <= 1)  # j in i's window of round r2
        dup += hit
        visible[:, :, r2] = hit[:, :, r2]  # the slots of round r2 use its own window
    visible &= valid
    scores = q_c @ k_w.transpose(-2, -1)  # (B, H, R, n, C, W)
    scores = scores - torch.log(dup.clamp_(min=1).to(scores.dtype))  # a key seen in N rounds counts once
    scores = scores.masked_fill(~visible, float("-inf"))
    scores = scores.masked_fill((qpos < 0)[..., None], 0.0)  # padding queries: finite rows, cut off below
    is_self = kpos[..., None, :] == qpos[..., :, None]
    scores = scores.masked_fill(is_self & visible, self_score(scores.dtype))
    lse = torch.logsumexp(_aligned(scores, C), dim=-1)  # (B, H, R, n, C); finite: a query sees at least itself
    probs = torch.exp(scores - lse[..., None])
    o = probs @ v_w  # (B, H, R, n, C, Dv)
    # ---- back to positions; combine the rounds by their logsumexp ------------------------------------------------
    o = o.reshape(B, H, R, Tp, -1)[:, :, :, :T]  # (B, H, R, T, Dv) in sorted order
    lse = lse.reshape(B, H, R, Tp)[..., :T]
    inv = torch.argsort(order, dim=-1)  # slot of each position
    o = o.gather(3, inv[..., None].expand(*inv.shape, o.shape[-1]))  # (B, H, R, T, Dv) by position
    lse = lse.gather(-1, inv)
    weights = torch.softmax(lse, dim=2)  # (B, H, R, T): exp(z_r - logsumexp_r z_r)
    out = (weights[..., None] * o).sum(2)  # (B, H, T, Dv)
    return out.permute(0, 2, 1, 3)  # (B, T, H, Dv)
