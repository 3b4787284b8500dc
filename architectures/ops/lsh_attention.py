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

Cost: the sort is O(n log n); after it, each bucket is padded to whole chunks (at most n + n_buckets * chunk_size
slots) and a chunk sees its own block and the previous one (and the next when not causal), so attention is
O((n + n_buckets * chunk_size) * 2 * chunk_size * d) per round, never an n x n matrix.
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


def _bucket_layout(buckets: torch.Tensor, chunk_size: int, n_buckets: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """buckets (B, H, R, T) -> (slot of each position (B, H, R, T), its chunk within its bucket (B, H, R, T), the
    position held by each slot (B, H, R, L), -1 for padding; L). The layout: buckets in order, each padded to whole
    chunks, tokens of a bucket in position order, so a token's slot is (start of its bucket) + (its rank in the
    bucket) and its chunk within the bucket is a chunk of the layout. L = (ceil(T / C) + min(n_buckets, T)) * C
    bounds the padded length whatever the buckets are, so the shapes never depend on the data."""
    B, H, R, T = buckets.shape
    C = chunk_size
    L = (-(-T // C) + min(n_buckets, T)) * C
    pos = torch.arange(T, device=buckets.device)
    order = torch.argsort(buckets * T + pos, dim=-1)  # (B, H, R, T): positions sorted by (bucket, position)
    sorted_buckets = buckets.gather(-1, order)
    first = torch.ones_like(sorted_buckets, dtype=torch.bool)
    first[..., 1:] = sorted_buckets[..., 1:] != sorted_buckets[..., :-1]  # a bucket starts at this sorted index
    rank = pos - torch.where(first, pos, 0).cummax(dim=-1).values  # (B, H, R, T): rank within the bucket
    sizes = torch.zeros(B, H, R, n_buckets, dtype=torch.long, device=buckets.device)
    sizes.scatter_add_(-1, buckets, torch.ones_like(buckets))  # tokens per bucket
    padded = -(-sizes // C) * C
    start = padded.cumsum(-1) - padded  # (B, H, R, n_buckets): first slot of each bucket (integers: exact)
    sorted_slot = start.gather(-1, sorted_buckets) + rank  # (B, H, R, T)
    slot = torch.empty_like(sorted_slot).scatter_(-1, order, sorted_slot)  # by position
    chunk = torch.empty_like(rank).scatter_(-1, order, rank // C)  # by position
    source = torch.full((B, H, R, L), -1, dtype=torch.long, device=buckets.device)
    source.scatter_(-1, slot, pos.expand(B, H, R, T).contiguous())  # position held by each slot
    return slot, chunk, source, L


def lsh_attention(qk: torch.Tensor, v: torch.Tensor, buckets: torch.Tensor, *, chunk_size: int, causal: bool,
                  n_buckets: int | None = None) -> torch.Tensor:
    """Blocked form. qk: (B, T, H, D); v: (B, T, H, Dv); buckets: (B, T, H, R) in [0, n_buckets) -> (B, T, H, Dv).
    Pass ``n_buckets`` (the mixer does): without it the largest bucket present is used, and the padded length then
    depends on the data.

    Each round lays its tokens out bucket by bucket, every bucket padded to whole chunks (``_bucket_layout``), so a
    query's chunk within its bucket is a block of the layout and its window (the previous chunk of its bucket and its
    own) is the previous block and its own, at columns fixed by the ranks of the keys in the bucket. Nothing a later
    token does moves an earlier key's column, so the sums of a past query run in the same order and its output is
    bitwise unchanged when future tokens change (the layout of the globally sorted sequence would shift by the
    number of later tokens in earlier buckets, and the rounding with it)."""
    B, T, H, D = qk.shape
    R = buckets.shape[-1]
    C = chunk_size
    n_buckets = int(buckets.max()) + 1 if n_buckets is None else n_buckets
    dev = qk.device
    b_h = buckets.permute(0, 2, 3, 1)  # (B, H, R, T)
    slot, chunk, source, L = _bucket_layout(b_h, C, n_buckets)  # (B, H, R, T) x 2, (B, H, R, L)
    n = L // C
    # code = bucket * M + chunk, M > number of chunks + 1: j is in i's window of a round iff 0 <= code_i - code_j <= 1
    M = n + 2
    code = (b_h * M + chunk).int()  # (B, H, R, T) by position
    # ---- gather into the layout ----------------------------------------------------------------------------------
    valid_slot = source >= 0  # (B, H, R, L)
    idx = source.clamp(min=0)
    keys = normalize_keys(qk)

    def lay_out(x: torch.Tensor) -> torch.Tensor:  # (B, T, H, F) -> (B, H, R, L, F), zeros in padding slots
        xh = x.permute(0, 2, 1, 3)[:, :, None].expand(B, H, R, T, x.shape[-1])
        out = xh.gather(3, idx[..., None].expand(B, H, R, L, x.shape[-1]))
        return out.masked_fill(~valid_slot[..., None], 0.0)

    sq, sk, sv = lay_out(qk), lay_out(keys), lay_out(v)
    spos = torch.where(valid_slot, source, -1)  # (B, H, R, L)
    # codes of every round, read at this round's slots: (B, H, R, L, R') for the duplicate count
    scodes = torch.stack([code[:, :, r2, None].expand(B, H, R, T).gather(-1, idx) for r2 in range(R)], dim=-1)
    scodes = scodes.masked_fill(~valid_slot[..., None], -10)
    after = 0 if causal else 1
    q_c = sq.view(B, H, R, n, C, D)  # (B, H, R, n, C, D)
    qpos = spos.view(B, H, R, n, C)
    qcodes = scodes.view(B, H, R, n, C, R)
    k_w = _windows(sk, C, 1, after, 0.0)  # (B, H, R, n, W, D), W = (2 + after) * C
    v_w = _windows(sv, C, 1, after, 0.0)
    kpos = _windows(spos[..., None], C, 1, after, -1)[..., 0]  # (B, H, R, n, W)
    kcodes = _windows(scodes, C, 1, after, -10)  # (B, H, R, n, W, R')
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
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, R, n, C); finite: a query always sees at least itself
    probs = torch.exp(scores - lse[..., None])
    o = probs @ v_w  # (B, H, R, n, C, Dv)
    # ---- back to positions; combine the rounds by their logsumexp ------------------------------------------------
    o = o.reshape(B, H, R, L, -1).gather(3, slot[..., None].expand(B, H, R, T, o.shape[-1]))  # (B, H, R, T, Dv)
    lse = lse.reshape(B, H, R, L).gather(-1, slot)  # (B, H, R, T)
    weights = torch.softmax(lse, dim=2)  # (B, H, R, T): exp(z_r - logsumexp_r z_r)
    out = (weights[..., None] * o).sum(2)  # (B, H, T, Dv)
    return out.permute(0, 2, 1, 3)  # (B, T, H, Dv)
