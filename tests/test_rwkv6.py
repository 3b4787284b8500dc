"""RWKV-6: the chunked WKV and the decoding step against our fp32 loop (naive_rwkv6), and our loop against fla's
PyTorch references (fla.ops.rwkv6 naive_recurrent_rwkv6 and naive_chunk_rwkv6). fla's RWKV6Attention layer runs
only through Triton kernels (CUDA), so the layer is checked against its own fp32 reference (the registry-wide tests)
and, here, the ddlerp/decay equations against a literal transcription of the paper's. Odd shapes: T = 63, K = 5,
V = 7, 3 heads."""
import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.ops.rwkv6 import chunk_rwkv6, naive_rwkv6, rwkv6_step

B, T, H, K, V = 2, 63, 3, 5, 7


def wkv_inputs(t=T, k_dim=K, v_dim=V, dtype=torch.float32, decay_shift=-1.0, requires_grad=False, seed=0):
    """r, k, v Gaussian; log decays w = -exp(d) with d ~ N(decay_shift, 1); bonus u; an initial state."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    ins = {"r": randn(B, t, H, k_dim), "k": randn(B, t, H, k_dim), "v": randn(B, t, H, v_dim),
           "w": -torch.exp(randn(B, t, H, k_dim) + decay_shift), "u": randn(H, k_dim),
           "initial_state": randn(B, H, k_dim, v_dim)}
    return {key: x.to(dtype).requires_grad_(requires_grad) for key, x in ins.items()}


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 16, 32, 63, 64, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_wkv_matches_naive_loop(chunk_size, with_state):
    ins = wkv_inputs()
    if not with_state:
        ins["initial_state"] = None
    o, S = chunk_rwkv6(**ins, chunk_size=chunk_size)
    o_ref, S_ref = naive_rwkv6(**ins)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S, S_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_chunk_wkv_gradients_match_naive_loop(chunk_size):
    ins = wkv_inputs(requires_grad=True)
    leaves = list(ins.values())
    g_o, g_S = torch.randn(B, T, H, V), torch.randn(B, H, K, V)

    def grads(fn, **kw):
        o, S = fn(**ins, **kw)
        return torch.autograd.grad((o * g_o).sum() + (S * g_S).sum(), leaves)

    for got, want in zip(grads(chunk_rwkv6, chunk_size=chunk_size), grads(naive_rwkv6)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_step_matches_naive_loop():
    ins = wkv_inputs()
    S = ins["initial_state"]
    outs = []
    for t in range(T):
        o_t, S = rwkv6_step(ins["r"][:, t], ins["k"][:, t], ins["v"][:, t], ins["w"][:, t], ins["u"],
                            initial_state=S)
        outs.append(o_t)
    o_ref, S_ref = naive_rwkv6(**ins)
    torch.testing.assert_close(torch.stack(outs, 1), o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S, S_ref, rtol=1e-5, atol=1e-5)


def test_chunk_wkv_is_finite_and_exact_under_strong_decays():
    """Log decays of about -e^3 per step: their sum over a chunk of 16 is below -300, so exp(-W_s), the factor a
    split exp(W_t) exp(-W_s) would need, overflows fp32 (max ~e^88)."""
    ins = wkv_inputs(decay_shift=3.0)
    assert ins["w"][:, :16].sum(1).min() < -300
    o, S = chunk_rwkv6(**ins, chunk_size=16)
    o_ref, _ = naive_rwkv6(**ins)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)


def test_chunk_wkv_bf16_inputs_close_to_fp32_loop():
    """bf16 inputs, computed in fp32 inside, output rounded to bf16: error within 1e-2 of the largest output."""
    ins = wkv_inputs(dtype=torch.bfloat16)
    o, S = chunk_rwkv6(**ins, chunk_size=16)
    assert o.dtype == torch.bfloat16
    o_ref, S_ref = naive_rwkv6(**{key: x.float() for key, x in ins.items()})
    assert (o.float() - o_ref).abs().max() <= 1e-2 * o_ref.abs().max()
    torch.testing.assert_close(S, S_ref, rtol=1e-4, atol=1e-4)


# ---- fla (flash-linear-attention) as the oracle ---------------------------------------------------------------------
def _head_first(x):  # (B, T, H, D) -> (B, H, T, D)
    return x.transpose(1, 2)


def test_naive_loop_matches_fla_naive_recurrent_rwkv6():
    naive = pytest.importorskip("fla.ops.rwkv6.recurrent_naive")
    ins = wkv_inputs()
    o, S = naive_rwkv6(**ins)
    o_fla, S_fla = naive.naive_recurrent_rwkv6(*(_head_first(ins[key]) for key in "rkvw"), ins["u"], scale=1.0,
                                               initial_state=ins["initial_state"], output_final_state=True)
    torch.testing.assert_close(o, _head_first(o_fla), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S, S_fla, rtol=1e-5, atol=1e-5)


def test_chunk_wkv_matches_fla_naive_chunk_rwkv6():
    chunk_naive = pytest.importorskip("fla.ops.rwkv6.chunk_naive")
    ins = wkv_inputs(t=64)  # fla's chunked reference needs T to be a multiple of its chunk (32)
    ins["initial_state"] = None  # and starts from zeros
    o, _ = chunk_rwkv6(**ins, chunk_size=16)
    o_fla = chunk_naive.naive_chunk_rwkv6(*(_head_first(ins[key]) for key in "rkvw"), ins["u"], chunk_size=32)
    torch.testing.assert_close(o, _head_first(o_fla), rtol=1e-4, atol=1e-5)


# ---- the layer's equations --------------------------------------------------------------------------------------
def test_time_mix_features_follow_the_papers_ddlerp_and_decay():
    """r, k, v, g and the decay of the layer against the paper's Section 4 written out token by token."""
    torch.manual_seed(0)
    m = architectures.create_mixer("rwkv6", 12, 3, mix_rank=4, decay_rank=5)
    with torch.no_grad():
        for p in (m.mix_w1, m.mix_w2, m.decay_w1, m.decay_w2):
            p.normal_(0, 0.3)  # make the data-dependent paths matter
        x = torch.randn(2, 6, 12)
        prev = torch.randn(2, 12)
        r, k, v, w, g = m._features(x, prev, fp32=False)
        mu_names = ["w", "k", "v", "r", "g"]
        for t in range(6):
            a, b = x[:, t], (prev if t == 0 else x[:, t - 1])  # x_t and x_{t-1}
            xxx = a + (b - a) * m.mu_x  # lerp with mu_x
            hidden = torch.tanh(xxx @ m.mix_w1).view(2, 5, 4)
            mixed = {}
            for i, name in enumerate(mu_names):
                lora = m.mu[i] + hidden[:, i] @ m.mix_w2[i]  # lambda + tanh(x A) B
                mixed[name] = a + (b - a) * lora  # ddlerp
            d = m.decay + torch.tanh(mixed["w"] @ m.decay_w1) @ m.decay_w2
            torch.testing.assert_close(torch.exp(w[:, t].reshape(2, 12)), torch.exp(-torch.exp(d)))
            torch.testing.assert_close(r[:, t].reshape(2, 12), mixed["r"] @ m.wr.weight.T)
            torch.testing.assert_close(k[:, t].reshape(2, 12), mixed["k"] @ m.wk.weight.T)
            torch.testing.assert_close(v[:, t].reshape(2, 12), mixed["v"] @ m.wv.weight.T)
            torch.testing.assert_close(g[:, t], F.silu(mixed["g"] @ m.wg.weight.T))
