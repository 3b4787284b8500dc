"""Linformer: the batched op against the fp32 loop on odd shapes, exactness with identity projections at k = n, the
error against exact attention as a function of k, non-causality, and the per-length use of the projections."""
import math

import pytest
import torch

import architectures
from architectures.ops.linformer import (linformer_attention, linformer_error_table, mean_pooling_projection,
                                         naive_linformer_attention)
from architectures.ops.softmax_attention import naive_softmax_attention

B, T, H, D = 2, 63, 3, 60


def test_batched_matches_naive_with_gradients():
    q, k, v = (torch.randn(B, T, H, D, requires_grad=True) for _ in range(3))
    e, f = (torch.randn(T, 13, requires_grad=True) / math.sqrt(13) for _ in range(2))
    got, want = linformer_attention(q, k, v, e, f), naive_linformer_attention(q, k, v, e, f)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v, e, f), g), torch.autograd.grad(want, (q, k, v, e, f), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_identity_projections_at_k_equal_n_reproduce_exact_attention():
    q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
    eye = torch.eye(T)
    exact = naive_softmax_attention(q, k, v, causal=False)
    torch.testing.assert_close(linformer_attention(q, k, v, eye, eye), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(naive_linformer_attention(q, k, v, eye, eye), exact, rtol=1e-5, atol=1e-5)


def test_mixer_with_identity_projections_equals_standard_bidirectional_attention():
    lin = architectures.create_mixer("linformer", 120, 2, causal=False, proj_len=T, max_seq_len=T)
    std = architectures.create_mixer("standard", 120, 2, causal=False, rope_theta=None)
    std.load_state_dict({k: v for k, v in lin.state_dict().items() if k.startswith("w")})
    with torch.no_grad():
        lin.e_blocks[0].copy_(torch.eye(T))
        lin.f_blocks[0].copy_(torch.eye(T))
    x = torch.randn(B, T, 120)
    torch.testing.assert_close(lin(x), std(x), rtol=1e-4, atol=1e-5)


def test_error_against_exact_attention_is_reported_per_k():
    rows = linformer_error_table(n=128, ks=(8, 32, 128), head_dim=32, seeds=(0, 1))
    print("\nLinformer relative error vs exact bidirectional attention (n=128, d=32):")
    for r in rows:
        print(f"  k={r['k']:4d}  {r['projection']:18s} {r['rel_error']:.4g}")
    assert all(math.isfinite(r["rel_error"]) for r in rows)
    identity = [r for r in rows if r["projection"] == "identity"]
    assert len(identity) == 1 and identity[0]["rel_error"] < 1e-5
    pooled = {r["k"]: r["rel_error"] for r in rows if r["projection"] == "mean pooling"}
    assert pooled[128] < 1e-5, "pooling segments of one position are the identity"
    assert pooled[8] > 1e-3, "a real compression is not exact on inputs without low-rank structure"


def test_mean_pooling_projection_averages_segments():
    e = mean_pooling_projection(10, 3)
    torch.testing.assert_close(e.sum(0), torch.ones(3))
    assert ((e > 0).sum(1) == 1).all(), "every position belongs to exactly one segment"


def test_a_length_n_input_uses_the_first_n_rows_and_only_their_blocks():
    m = architectures.create_mixer("linformer", 64, 2, causal=False, proj_len=8, max_seq_len=1000)
    assert [p.shape[0] for p in m.e_blocks] == [256, 256, 256, 232]
    x = torch.randn(1, 300, 64, requires_grad=True)
    m(x).sum().backward()
    assert m.e_blocks[0].grad is not None and m.e_blocks[1].grad is not None
    assert m.e_blocks[2].grad is None and m.f_blocks[3].grad is None, "unused rows get no gradient buffer"
    e, _ = m.projections(300)
    torch.testing.assert_close(e, torch.cat([m.e_blocks[0], m.e_blocks[1]])[:300])
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        m(torch.randn(1, 1001, 64))


def test_linformer_refuses_causal_mode():
    assert architectures.get_mixer("linformer").spec.modes == {"bidirectional"}
    with pytest.raises(ValueError, match="does not support causal"):
        architectures.create_mixer("linformer", 64, 2, causal=True)

