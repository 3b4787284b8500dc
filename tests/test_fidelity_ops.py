"""Op-level fidelity (issue 11): FAVOR+ against the paper's num / (den + eps) and its true gradient; exact causality
of the chunked linear attention at every dtype; tables (RoPE, sinusoids, RetNet decays) built in fp64 for fp64."""
from __future__ import annotations

import math

import pytest
import torch

from architectures.ops.favor import (bidirectional_favor_attention, chunk_favor_attention, favor_attention_step,
                                     naive_bidirectional_favor_attention, naive_favor_attention,
                                     orthogonal_random_features)
from architectures.ops.linear_attention import chunk_linear_attention

B, T, H, D, M = 2, 23, 2, 8, 12


# ---- FAVOR+ --------------------------------------------------------------------------------------------------------
def _paper_favor(q, k, v, w, eps, causal):
    """The paper's estimator written out in fp64, no stabiliser: phi(x) = exp(W x~ - |x~|^2/2) / sqrt(m),
    x~ = x / d^(1/4); o_t = sum_s phi(q_t).phi(k_s) v_s / (sum_s phi(q_t).phi(k_s) + eps), s <= t if causal."""
    d, m = q.shape[-1], w.shape[0]

    def phi(x):
        x = x / d ** 0.25
        return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(m)  # (B, T, H, m)

    a = torch.einsum("bthm,bshm->bhts", phi(q), phi(k))  # (B, H, T, S): kernel between query t and key s
    if causal:
        a = a * torch.ones(a.shape[-2:], dtype=torch.bool).tril()
    num = torch.einsum("bhts,bshv->bthv", a, v)
    den = a.sum(-1).transpose(1, 2)[..., None]  # (B, T, H, 1)
    return num / (den + eps)


def _favor_inputs(scale=1.0):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(3))
    w = orthogonal_random_features(M, D, g).double()
    return q * scale, k * scale, v, w


def _steps(q, k, v, w, eps):
    state, outs = (q.new_zeros(B, H, M, D), q.new_zeros(B, H, M)), []
    for t in range(T):
        o, state = favor_attention_step(q[:, t], k[:, t], v[:, t], w, state, eps=eps)
        outs.append(o)
    return torch.stack(outs, dim=1)


FORMS = {
    "chunk": lambda q, k, v, w, eps: chunk_favor_attention(q, k, v, w, chunk_size=8, eps=eps)[0],
    "naive": lambda q, k, v, w, eps: naive_favor_attention(q, k, v, w, eps=eps)[0],
    "step": _steps,
    "bidirectional": lambda q, k, v, w, eps: bidirectional_favor_attention(q, k, v, w, eps=eps),
    "naive_bidirectional": lambda q, k, v, w, eps: naive_bidirectional_favor_attention(q, k, v, w, eps=eps),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_favor_equals_num_over_den_plus_eps(form, eps):
    """Large |q| (scale 2) makes the per-query shift large: an eps added after it would be off by exp(shift)."""
    q, k, v, w = _favor_inputs(scale=2.0)
    want = _paper_favor(q, k, v, w, eps, causal="bidirectional" not in form)
    got = FORMS[form](q, k, v, w, eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["chunk", "bidirectional"])
def test_favor_gradient_is_the_true_gradient(form):
    """gradcheck in fp64 against finite differences of the function itself; the gradient also equals that of the
    unstabilised paper formula (a detached shift that did not cancel exactly would fail both)."""
    q, k, v, w = _favor_inputs(scale=1.5)
    q, k, v = (t[:1, :9].clone().requires_grad_() for t in (q, k, v))
    eps = 1e-2
    assert torch.autograd.gradcheck(lambda q, k, v: FORMS[form](q, k, v, w, eps), (q, k, v), eps=1e-6, atol=1e-8,
                                    rtol=1e-6)
    got, want = FORMS[form](q, k, v, w, eps), _paper_favor(q, k, v, w, eps, causal=form == "chunk")
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


# ---- exact causality of the chunked linear attention ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("split", [1, 15, 16, 17, 40, 62])
def test_chunk_linear_attention_is_exactly_causal(dtype, split):
    """The state entering a chunk must be built from earlier chunks only: (inclusive sum - own chunk) carries the
    chunk's later tokens into its earlier outputs through rounding."""
    g = torch.Generator().manual_seed(split)
    q, k = (torch.rand(2, 63, 2, 16, generator=g) + 0.1 for _ in range(2))  # positive features
    v = torch.randn(2, 63, 2, 16, generator=g)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    y, _ = chunk_linear_attention(q, k, v, chunk_size=16)
    k2, v2 = k.clone(), v.clone()
    k2[:, split:] = (torch.rand(2, 63 - split, 2, 16, generator=g) * 30).to(dtype)
    v2[:, split:] = (torch.randn(2, 63 - split, 2, 16, generator=g) * 30).to(dtype)
    y2, _ = chunk_linear_attention(q, k2, v2, chunk_size=16)
    assert torch.equal(y2[:, :split], y[:, :split]), \
        f"past moved by {(y2[:, :split] - y[:, :split]).abs().max().item():.3g}"
    assert y.dtype == dtype


# ---- fp64 tables ---------------------------------------------------------------------------------------------------
def test_rope_tables_are_fp64_for_fp64():
    from architectures.ops.rope import rope_cos_sin

    positions = torch.arange(0, 5000, 37)
    cos, sin = rope_cos_sin(positions, 16, 10000.0, torch.float64)
    i = torch.arange(0, 16, 2, dtype=torch.float64)
    angles = positions.double()[:, None] * 10000.0 ** (-i / 16)
    want = torch.cat([angles, angles], dim=-1)
    torch.testing.assert_close(cos[:, 0], want.cos(), rtol=0, atol=1e-12)
    torch.testing.assert_close(sin[:, 0], want.sin(), rtol=0, atol=1e-12)


def test_sinusoid_tables_are_fp64_for_fp64():
    from architectures.backbone import sinusoidal_positions
    from architectures.ops.relative_segment import sinusoid_embedding

    positions = torch.arange(0, 5000, 37)
    i = torch.arange(0, 16, 2, dtype=torch.float64)
    angles = positions.double()[:, None] / 10000.0 ** (i / 16)  # (T, 8)
    pe = sinusoidal_positions(positions, 16, torch.float64)
    torch.testing.assert_close(pe[:, 0::2], angles.sin(), rtol=0, atol=1e-12)
    torch.testing.assert_close(pe[:, 1::2], angles.cos(), rtol=0, atol=1e-12)
    r = sinusoid_embedding(positions, 16, torch.float64)
    torch.testing.assert_close(r, torch.cat([angles.sin(), angles.cos()], dim=-1), rtol=0, atol=1e-12)


def test_retnet_decays_are_fp64_for_fp64():
    from architectures.ops.retention import retnet_log_decays

    got = retnet_log_decays(8, dtype=torch.float64)
    want = torch.tensor([math.log1p(-2.0 ** (-5 - h)) for h in range(8)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
