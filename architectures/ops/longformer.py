"""Longformer attention (Beltagy et al. 2020, arXiv:2004.05150): a sliding window plus global tokens.

With ``window`` the total two-sided window (Hugging Face's ``attention_window``; one side c = window // 2) and G the
global positions, query i sees key j when

    |i - j| <= c          (the band)          or   j in G   (every token sees the global tokens)   or   i in G
                                                                           (a global token sees every token)
    and, in causal mode, j <= i.

So in causal mode a global token is visible to every later token and itself attends to its whole past. All positions
use the same projections (Hugging Face's separate global projections set equal to the local ones).

``naive_longformer_attention`` is the oracle loop. ``longformer_attention`` never forms an n x n matrix: the band is
computed block-locally (blocks of c queries against the previous, own and next block: (B, H, n/c, c, 3c) scores), the
global columns as (B, H, n, g) scores joined to the band's in one softmax, and the g global rows as (B, H, g, n)
scores that overwrite those rows' outputs. Time O(n (w + g) d), memory O(n (w + g)).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import flop_notes


def global_index(global_positions: Sequence[int], T: int) -> list[int]:
    """The global positions that fall inside a sequence of length T, sorted and unique."""
    return sorted({p for p in global_positions if 0 <= p < T})


def naive_longformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                               global_positions: Sequence[int], causal: bool) -> torch.Tensor:
    """q, k, v: (B, T, H, D) -> (B, T, H, D) in fp32, one query at a time."""
    q, k, v = q.float(), k.float(), v.float()
    B, T, H, D = q.shape
    c = window // 2
    glob = set(global_index(global_positions, T))
    out = torch.zeros(B, T, H, v.shape[-1])
    for i in range(T):
        visible = [j for j in range(T)
                   if (abs(i - j) <= c or j in glob or i in glob) and (not causal or j <= i)]
        idx = torch.tensor(visible, dtype=torch.long)
        scores = torch.einsum("bhd,bshd->bhs", q[:, i], k[:, idx]) / math.sqrt(D)  # (B, H, |visible|)
        out[:, i] = torch.einsum("bhs,bshd->bhd", scores.softmax(dim=-1), v[:, idx])
    return out


def longformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                         global_positions: Sequence[int], causal: bool) -> torch.Tensor:
    """The fast form of ``naive_longformer_attention``, same signature."""
    B, T, H, D = q.shape
    c = window // 2
    if c < 1:
        raise ValueError(f"window must be >= 2 (one side = window // 2), got {window}")
    scale = 1.0 / math.sqrt(D)
    dev = q.device
    glob = torch.tensor(global_index(global_positions, T), dtype=torch.long, device=dev)  # (g,)
    is_global = torch.zeros(T, dtype=torch.bool, device=dev)
    is_global[glob] = True

    # ---- the band, block-locally: block b holds queries b*c .. b*c + c - 1 ---------------------------------------
    nb = -(-T // c)
    pad = nb * c - T
    sides = 2 if causal else 3  # key blocks: previous, own (and next)
    qb = F.pad(q, (0, 0, 0, 0, 0, pad)).view(B, nb, c, H, D).permute(0, 3, 1, 2, 4)  # (B, H, nb, c, D)
    kp = F.pad(k, (0, 0, 0, 0, c, pad + c)).view(B, nb + 2, c, H, D).permute(0, 3, 1, 2, 4)  # (B, H, nb+2, c, D)
    vp = F.pad(v, (0, 0, 0, 0, c, pad + c)).view(B, nb + 2, c, H, D).permute(0, 3, 1, 2, 4)
    kb = torch.cat([kp[:, :, s:s + nb] for s in range(sides)], dim=3)  # (B, H, nb, sides*c, D)
    vb = torch.cat([vp[:, :, s:s + nb] for s in range(sides)], dim=3)
    band = qb @ kb.transpose(-2, -1) * scale  # (B, H, nb, c, sides*c)
    # Query r of block b is at b*c + r; key j of its sides*c keys is at (b-1)*c + j.
    qpos = (torch.arange(nb, device=dev)[:, None] * c + torch.arange(c, device=dev)[None, :])[:, :, None]  # (nb,c,1)
    kpos = (torch.arange(nb, device=dev)[:, None] * c - c + torch.arange(sides * c, device=dev)[None, :])[:, None, :]
    inside = (kpos >= 0) & (kpos < T)
    key_global = is_global[kpos.clamp(0, T - 1)]
    # Global keys are left out of the band: every query reads them through the global columns below.
    ok = inside & ~key_global & ((qpos - kpos).abs() <= c)  # (nb, c, sides*c)
    if causal:
        ok = ok & (kpos <= qpos)
    flop_notes.masked_scores(band, kept=ok, d_qk=D, d_v=D)
    band = band.masked_fill(~ok, float("-inf"))

    # ---- global columns: every query against the g global keys ---------------------------------------------------
    g = glob.numel()
    kg, vg = k[:, glob].transpose(1, 2), v[:, glob].transpose(1, 2)  # (B, H, g, D)
    cols = qb @ kg[:, :, None].transpose(-2, -1) * scale  # (B, H, nb, c, g)
    if causal:
        late = glob.view(1, 1, g) > qpos  # (nb, c, g): global keys after the query
        flop_notes.masked_scores(cols, discarded=late, d_qk=D, d_v=D)
        cols = cols.masked_fill(late, float("-inf"))
        del late  # freed here, as the inline mask it was, so that peak bytes do not move
    weights = torch.cat([cols, band], dim=-1).softmax(dim=-1)  # one softmax over global keys and the band
    out = weights[..., :g] @ vg[:, :, None] + weights[..., g:] @ vb  # (B, H, nb, c, D)
    out = out.permute(0, 2, 3, 1, 4).reshape(B, nb * c, H, D)[:, :T]  # (B, T, H, D)

    # ---- global rows: each global token against every key (its past in causal mode) ------------------------------
    if g:
        qg = q[:, glob].transpose(1, 2)  # (B, H, g, D)
        rows = qg @ k.transpose(1, 2).transpose(-2, -1) * scale  # (B, H, g, T): g x n, not n x n
        if causal:
            future = torch.arange(T, device=dev)[None, :] > glob[:, None]  # (g, T)
            flop_notes.masked_scores(rows, discarded=future, d_qk=D, d_v=D)
            rows = rows.masked_fill(future, float("-inf"))
            del future
        rows = rows.softmax(dim=-1) @ v.transpose(1, 2)  # (B, H, g, D)
        out = out.index_copy(1, glob, rows.transpose(1, 2).to(out.dtype))  # overwrite the global tokens' outputs
    return out
