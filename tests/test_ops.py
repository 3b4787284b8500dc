"""Operator-level oracles on odd shapes (T=63, D=60): fast forms against the fp32 loops and against dense masks."""
import math

import pytest
import torch

from architectures.ops.linear_attention import (bidirectional_linear_attention, chunk_linear_attention,
                                                linear_attention_step, naive_bidirectional_linear_attention,
                                                naive_linear_attention)
from architectures.ops.rope import apply_rope
from architectures.ops.sliding_window import naive_sliding_window_attention, sliding_window_attention
from architectures.ops.softmax_attention import naive_softmax_attention, softmax_attention

B, T, H, D = 2, 63, 3, 60


def qkv(t=T, h=H, d=D, dtype=torch.float32, requires_grad=False):
    return [torch.randn(B, t, h, d, dtype=dtype, requires_grad=requires_grad) for _ in range(3)]


def dense_masked_attention(q, k, v, mask):
    """Plain softmax attention under an explicit (T, S) boolean mask (True = visible)."""
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


@pytest.mark.parametrize("causal", [True, False])
def test_softmax_attention_matches_naive(causal):
    q, k, v = qkv()
    torch.testing.assert_close(softmax_attention(q, k, v, causal=causal),
                               naive_softmax_attention(q, k, v, causal=causal), rtol=1e-5, atol=1e-5)


def test_naive_attention_with_grouped_heads_equals_repeated_heads():
    q = torch.randn(B, T, 4, D)
    k, v = torch.randn(B, T, 2, D), torch.randn(B, T, 2, D)
    want = naive_softmax_attention(q, k.repeat_interleave(2, 2), v.repeat_interleave(2, 2), causal=True)
    torch.testing.assert_close(naive_softmax_attention(q, k, v, causal=True), want)


@pytest.mark.parametrize("window", [1, 2, 7, 16, 31, 62, 63, 64, 100])
def test_sliding_window_equals_dense_masked_attention(window):
    q, k, v = qkv()
    t = torch.arange(T)
    band = (t[None, :] <= t[:, None]) & (t[:, None] - t[None, :] < window)  # key s visible to query t
    want = dense_masked_attention(q, k, v, band)
    torch.testing.assert_close(sliding_window_attention(q, k, v, window), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(naive_sliding_window_attention(q, k, v, window), want, rtol=1e-5, atol=1e-5)


def test_sliding_window_gradients_match_naive():
    q, k, v = qkv(requires_grad=True)
    g = torch.randn(B, T, H, D)
    got = torch.autograd.grad(sliding_window_attention(q, k, v, 16), (q, k, v), g)
    want = torch.autograd.grad(naive_sliding_window_attention(q, k, v, 16), (q, k, v), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sliding_window_memory_is_linear_in_length():
    from harness.measure import LiveTensorBytes

    peaks = []
    for t in (1024, 2048, 4096):
        q, k, v = qkv(t=t, h=1, d=8)
        with LiveTensorBytes() as live:
            sliding_window_attention(q, k, v, 32)
        peaks.append(live.peak)
        assert live.peak < B * t * t * 4 / 4, "far below one T x T score matrix"
    assert peaks[1] / peaks[0] == pytest.approx(2, rel=0.02) and peaks[2] / peaks[1] == pytest.approx(2, rel=0.02)


def _positive(*ts):
    return [torch.nn.functional.elu(t) + 1 for t in ts]


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 63, 64])
def test_chunk_linear_attention_matches_naive(chunk_size):
    q, k, v = qkv()
    q, k = _positive(q, k)
    S0, z0 = torch.rand(B, H, D, D), torch.rand(B, H, D)
    o, (S, z) = chunk_linear_attention(q, k, v, (S0, z0), chunk_size=chunk_size)
    o_ref, (S_ref, z_ref) = naive_linear_attention(q, k, v, (S0, z0))
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S, S_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)


def test_chunk_linear_attention_gradients_match_naive():
    q, k, v = qkv(requires_grad=True)
    S0 = torch.rand(B, H, D, D, requires_grad=True)
    z0 = torch.rand(B, H, D, requires_grad=True)
    g = torch.randn(B, T, H, D)

    def loss(fn, **kw):
        fq, fk = _positive(q, k)
        o, (S, z) = fn(fq, fk, v, (S0, z0), **kw)
        return (o * g).sum() + S.sum() + z.sum()

    got = torch.autograd.grad(loss(chunk_linear_attention, chunk_size=16), (q, k, v, S0, z0))
    want = torch.autograd.grad(loss(naive_linear_attention), (q, k, v, S0, z0))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_linear_attention_step_matches_naive():
    q, k, v = qkv(t=5)
    q, k = _positive(q, k)
    state = (torch.zeros(B, H, D, D), torch.zeros(B, H, D))
    outs = []
    for t in range(5):
        o, state = linear_attention_step(q[:, t], k[:, t], v[:, t], state)
        outs.append(o)
    o_ref, (S_ref, _) = naive_linear_attention(q, k, v)
    torch.testing.assert_close(torch.stack(outs, 1), o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state[0], S_ref)


def test_bidirectional_linear_attention_matches_naive():
    q, k, v = qkv()
    q, k = _positive(q, k)
    torch.testing.assert_close(bidirectional_linear_attention(q, k, v), naive_bidirectional_linear_attention(q, k, v),
                               rtol=1e-4, atol=1e-5)


def test_rope_is_a_complex_rotation():
    x = torch.randn(1, 7, 2, 8, dtype=torch.float64)
    pos = torch.arange(3, 10)
    got = apply_rope(x, pos, 10000.0)
    # pair i with i + D/2 as the real and imaginary parts of a complex number, rotated by pos * theta^(-2i/D)
    z = torch.complex(x[..., :4], x[..., 4:])
    freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    z = z * torch.polar(torch.ones(7, 4, dtype=torch.float64), pos[:, None] * freq)[None, :, None, :]
    torch.testing.assert_close(got, torch.cat([z.real, z.imag], -1))


def test_rope_makes_scores_depend_on_relative_position_only():
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    s1 = (apply_rope(q, torch.tensor([5]), 1e4) * apply_rope(k, torch.tensor([2]), 1e4)).sum()
    s2 = (apply_rope(q, torch.tensor([105]), 1e4) * apply_rope(k, torch.tensor([102]), 1e4)).sum()
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_grouped_softmax_attention_matches_naive_without_copying_kv(causal):
    from harness.measure import LiveTensorBytes

    q = torch.randn(B, T, 6, D)
    k, v = torch.randn(B, T, 2, D), torch.randn(B, T, 2, D)
    with LiveTensorBytes() as grouped:
        out = softmax_attention(q, k, v, causal=causal)
    torch.testing.assert_close(out, naive_softmax_attention(q, k, v, causal=causal), rtol=1e-5, atol=1e-5)
    k6, v6 = k.repeat_interleave(3, 2), v.repeat_interleave(3, 2)  # made outside the measured region
    with LiveTensorBytes() as repeated:
        softmax_attention(q, k6, v6, causal=causal)
    assert grouped.peak <= repeated.peak, "K and V are read per group, not copied per query head"
