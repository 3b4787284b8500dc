"""Transformer-XL: the batched segment op equals the oracle loop and the authors' segment-by-segment recurrence (memory
carried between segments, relative scores with the _rel_shift trick); the memory is stop-gradient; memory grows
linearly with the total length; the decode state is bounded."""
import math

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.ops.relative_segment import (naive_rel_segment_attention, rel_segment_attention,
                                                sinusoid_embedding)
from harness.measure import LiveTensorBytes

from .conftest import make_mixer


def _inputs(B, T, H, D, L, M, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(B, T, H, D, generator=g, dtype=dtype) for _ in range(3))
    k_mem, v_mem = k + 0.1 * torch.randn_like(k), v + 0.1 * torch.randn_like(v)  # distinct, to see which is read
    r = torch.randn(M + L, H, D, generator=g, dtype=dtype)
    u, vb = torch.randn(H, D, generator=g, dtype=dtype), torch.randn(H, D, generator=g, dtype=dtype)
    return q, k, v, k_mem, v_mem, r, u, vb


@pytest.mark.parametrize("L,M", [(16, 12), (7, 0), (5, 20), (64, 64), (1, 3)])
def test_batched_segments_equal_the_oracle_loop(L, M):
    args = [t.requires_grad_() for t in _inputs(1, 63, 2, 12, L, M, dtype=torch.float32)]
    got = rel_segment_attention(*args, segment_len=L, mem_len=M)
    want = naive_rel_segment_attention(*args, segment_len=L, mem_len=M)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, args, g), torch.autograd.grad(want, args, g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _rel_shift(x: torch.Tensor) -> torch.Tensor:
    """The authors' trick: row i of x (by key distance klen-1 .. 0) shifted so that column j holds distance
    (mlen + i) - j. x: (..., qlen, klen)."""
    *lead, qlen, klen = x.shape
    padded = torch.cat([x.new_zeros(*lead, qlen, 1), x], dim=-1)  # (..., qlen, klen + 1)
    return padded.view(*lead, klen + 1, qlen)[..., 1:, :].reshape(*lead, qlen, klen)


def recurrent_transformer_xl(m, x: torch.Tensor) -> torch.Tensor:
    """Segment by segment as in the paper's training loop: mems = [mems, h][-mem_len:], stop-gradient."""
    B, T, D = x.shape
    H, Dh = m.n_heads, m.head_dim
    mems = x.new_zeros(B, 0, D)
    outs = []
    for s in range(0, T, m.segment_len):
        h = x[:, s:s + m.segment_len]  # (B, qlen, D)
        cat = torch.cat([mems, h], dim=1)  # (B, klen, D)
        qlen, klen = h.shape[1], cat.shape[1]
        q = m.wq(h).view(B, qlen, H, Dh).transpose(1, 2)  # (B, H, qlen, Dh)
        k = m.wk(cat).view(B, klen, H, Dh).transpose(1, 2)
        v = m.wv(cat).view(B, klen, H, Dh).transpose(1, 2)
        pos_seq = torch.arange(klen - 1, -1, -1.0)  # distances, farthest first
        r = m.wr(sinusoid_embedding(pos_seq, D, x.dtype)).view(klen, H, Dh).transpose(0, 1)  # (H, klen, Dh)
        ac = (q + m.u[:, None]) @ k.transpose(-2, -1)  # (B, H, qlen, klen)
        bd = _rel_shift((q + m.v[:, None]) @ r.transpose(-2, -1))
        scores = (ac + bd) / math.sqrt(Dh)
        mlen = klen - qlen
        future = torch.ones(qlen, klen, dtype=torch.bool).triu(1 + mlen)
        o = scores.masked_fill(future, float("-inf")).softmax(-1) @ v  # (B, H, qlen, Dh)
        outs.append(m.wo(o.transpose(1, 2).reshape(B, qlen, D)))
        mems = cat[:, -m.mem_len:].detach() if m.mem_len else cat[:, :0]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("L,M", [(16, 12), (16, 40), (8, 8), (9, 0)])
def test_equals_the_segment_recurrence_of_the_paper(L, M):
    m = make_mixer("transformer_xl", segment_len=L, mem_len=M).double()
    with torch.no_grad():
        m.u.normal_()
        m.v.normal_()
    x = torch.randn(2, 63, m.d_model, dtype=torch.float64, requires_grad=True)
    y, y_rec = m(x), recurrent_transformer_xl(m, x)
    torch.testing.assert_close(y, y_rec, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(y)
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad(y, [x, *params], g), torch.autograd.grad(y_rec, [x, *params], g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_memory_is_read_but_stop_gradient():
    m = make_mixer("transformer_xl", segment_len=16, mem_len=12)
    x = torch.randn(1, 48, m.d_model, requires_grad=True)
    y = m(x)
    (gx,) = torch.autograd.grad(y[:, 32:].sum(), x)  # the third segment: its memory is positions 20..31
    assert gx[:, :32].abs().max() == 0 and gx[:, 32:].abs().max() > 0
    with torch.no_grad():
        for t, seen in ((25, True), (5, False)):  # inside the third segment's memory, and before it
            x2 = x.detach().clone()
            x2[:, t] += 1.0
            changed = not torch.allclose(m(x2)[:, 32:], y.detach()[:, 32:], rtol=0, atol=1e-6)
            assert changed == seen


def test_memory_of_the_forward_is_linear_in_length():
    m = architectures.create_mixer("transformer_xl", 64, 2, segment_len=32, mem_len=32)
    peaks = []
    for T in (512, 1024, 2048):
        x = torch.randn(1, T, 64)
        with torch.no_grad(), LiveTensorBytes() as live:
            m(x)
        peaks.append(live.peak)
    assert peaks[1] == pytest.approx(2 * peaks[0], rel=0.02) and peaks[2] == pytest.approx(2 * peaks[1], rel=0.02)


def test_decode_state_is_bounded_by_memory_plus_segment():
    m = make_mixer("transformer_xl", segment_len=16, mem_len=12)
    row = 2 * m.n_heads * m.head_dim * 4
    assert [m.state_bytes(1, n, torch.float32) // row for n in (0, 15, 16, 17, 31, 32, 100)] == \
        [0, 15, 12, 13, 27, 12, 16]  # n - max(0, 16 * (n // 16) - 12)
    assert max(m.state_bytes(1, n, torch.float32) for n in range(500)) == (12 + 16 - 1) * row


def test_sinusoid_matches_the_paper():
    R = sinusoid_embedding(torch.tensor([0.0, 3.0]), 6)
    f = 1.0 / 10000 ** (torch.arange(0, 6, 2) / 6)
    torch.testing.assert_close(R[1], torch.cat([(3 * f).sin(), (3 * f).cos()]))
    torch.testing.assert_close(R[0], torch.tensor([0.0, 0, 0, 1, 1, 1]))


def test_is_registered_with_the_guides_claim():
    spec = architectures.get_mixer("transformer_xl").spec
    assert spec.claimed_time == "O(N²) per segment" and spec.time_exponent == 1 and spec.state_exponent == 0
