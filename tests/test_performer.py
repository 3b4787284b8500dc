"""FAVOR+ (Performer): the chunked and step forms against the fp32 loop on odd shapes, the random features (orthogonal,
seeded, redrawn on request), and the approximation error against exact softmax attention as features grow."""
import pytest
import torch

import architectures
from architectures.ops.favor import (bidirectional_favor_attention, chunk_favor_attention, favor_attention_step,
                                     favor_error_table, favor_features, naive_bidirectional_favor_attention,
                                     naive_favor_attention, orthogonal_random_features)

B, T, H, D = 2, 63, 3, 60


def qkv(requires_grad=False, scale=0.5):
    q, k = (torch.randn(B, T, H, D) * scale for _ in range(2))
    v = torch.randn(B, T, H, D)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def features(m=40, seed=0):
    return orthogonal_random_features(m, D, torch.Generator().manual_seed(seed))


def test_random_features_are_orthogonal_within_blocks_and_chi_distributed():
    w = orthogonal_random_features(150, D, torch.Generator().manual_seed(0)).double()  # blocks of 60, 60, 30 rows
    for block in (w[:60], w[60:120], w[120:]):
        gram = block @ block.T
        off_diagonal = gram - torch.diag(gram.diagonal())
        assert off_diagonal.abs().max() < 1e-4 * gram.diagonal().max()
    norms = w.norm(dim=1)
    # chi(60): mean ~ sqrt(59.5) ~ 7.71, sd ~ 0.71: not all equal (the "regularised" variant would give sqrt(d))
    assert 7.0 < float(norms.mean()) < 8.4 and float(norms.std()) > 0.3


def test_features_are_positive_and_unbiased_for_the_softmax_kernel():
    torch.manual_seed(0)
    x, y = torch.randn(1, 1, 1, 16) * 0.4, torch.randn(1, 1, 1, 16) * 0.4
    w = torch.randn(200_000, 16)  # i.i.d. features: the plain Monte-Carlo estimate of E[phi(x) phi(y)]
    px, py = favor_features(x, w), favor_features(y, w)
    assert (px > 0).all() and (py > 0).all()
    estimate = float((px * py).sum())  # the 1/sqrt(m) factors make this the mean over features
    exact = float(torch.exp((x * y).sum() / 16 ** 0.5))
    assert estimate == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("chunk_size", [1, 16, 63, 64])
def test_chunked_matches_naive_with_initial_state_and_gradients(chunk_size):
    q, k, v = qkv(requires_grad=True)
    w = features()
    S0, z0 = torch.rand(B, H, 40, D), torch.rand(B, H, 40)
    got, (S, z) = chunk_favor_attention(q, k, v, w, (S0, z0), chunk_size=chunk_size)
    want, (S_ref, z_ref) = naive_favor_attention(q, k, v, w, (S0, z0))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S, S_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_steps_match_the_parallel_form():
    q, k, v = qkv()
    w = features()
    want, _ = chunk_favor_attention(q, k, v, w, chunk_size=16)
    state = (torch.zeros(B, H, 40, D), torch.zeros(B, H, 40))
    outs = []
    for t in range(T):
        o, state = favor_attention_step(q[:, t], k[:, t], v[:, t], w, state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), want, rtol=1e-4, atol=1e-5)


def test_bidirectional_matches_naive():
    q, k, v = qkv()
    w = features()
    torch.testing.assert_close(bidirectional_favor_attention(q, k, v, w),
                               naive_bidirectional_favor_attention(q, k, v, w), rtol=1e-4, atol=1e-5)


def test_features_are_seeded_kept_as_a_buffer_and_redrawn_on_request():
    a = architectures.create_mixer("performer", 120, 2, n_features=32, seed=3)
    b = architectures.create_mixer("performer", 120, 2, n_features=32, seed=3)
    c = architectures.create_mixer("performer", 120, 2, n_features=32, seed=4)
    assert "projection" in a.state_dict() and a.projection.shape == (32, 60)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    x = torch.randn(1, 20, 120)
    b.load_state_dict(a.state_dict())
    before = b(x)
    b.redraw_features(4)
    assert b.seed == 4 and torch.equal(b.projection, c.projection)
    assert not torch.allclose(b(x), before)
    torch.testing.assert_close(b(x), b.reference(x), rtol=1e-4, atol=1e-5)


def test_approximation_error_falls_as_features_grow():
    rows = favor_error_table(n_features=(16, 64, 256), n=128, head_dim=32, seeds=(0, 1, 2, 3, 4), qk_scale=0.5)
    err = {r["n_features"]: r["rel_error"] for r in rows}
    print("\nFAVOR+ relative error vs exact causal softmax attention (n=128, d=32, q,k ~ N(0, 0.25)):", err)
    assert err[64] < 0.8 * err[16] and err[256] < 0.5 * err[16]
    assert err[256] < 0.3
