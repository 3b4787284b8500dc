"""Mamba-2 (SSD): the chunked algorithm and the decoding step against our fp32 loop (naive_ssd), and our loop, step and
layer against Hugging Face transformers' PyTorch Mamba-2 path (mamba2_chunk_scan, mamba2_selective_state_update,
Mamba2Mixer with its cache). Odd shapes: T = 63, head dim 5, state 7, 4 heads in 2 groups."""
import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.ops.ssd import chunk_ssd, naive_ssd, segsum, ssd_step

B, T, H, P, G, N = 2, 63, 4, 5, 2, 7


def ssd_inputs(t=T, dtype=torch.float32, dt_shift=-1.0, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    ins = {"x": randn(B, t, H, P), "dt": F.softplus(randn(B, t, H) + dt_shift), "A": -torch.exp(randn(H)),
           "B": randn(B, t, G, N), "C": randn(B, t, G, N), "D": randn(H), "initial_state": randn(B, H, P, N)}
    return {k: v.to(dtype).requires_grad_(requires_grad) for k, v in ins.items()}


def test_segsum_is_the_sum_between_positions():
    a = torch.randn(3, 9)
    s = segsum(a)
    for t in range(9):
        for u in range(9):
            want = a[:, u + 1:t + 1].sum(-1) if u <= t else torch.full((3,), float("-inf"))
            torch.testing.assert_close(s[:, t, u], want)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 32, 63, 64, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_ssd_matches_naive_loop(chunk_size, with_state):
    ins = ssd_inputs()
    if not with_state:
        ins["initial_state"] = None
    y, h = chunk_ssd(**ins, chunk_size=chunk_size)
    y_ref, h_ref = naive_ssd(**ins)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_chunk_ssd_gradients_match_naive_loop(chunk_size):
    ins = ssd_inputs(requires_grad=True)
    leaves = list(ins.values())
    g_y, g_h = torch.randn(B, T, H, P), torch.randn(B, H, P, N)

    def grads(fn, **kw):
        y, h = fn(**ins, **kw)
        return torch.autograd.grad((y * g_y).sum() + (h * g_h).sum(), leaves)

    for got, want in zip(grads(chunk_ssd, chunk_size=chunk_size), grads(naive_ssd)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_step_matches_naive_loop():
    ins = ssd_inputs()
    h = ins["initial_state"]
    ys = []
    for t in range(T):
        y_t, h = ssd_step(ins["x"][:, t], ins["dt"][:, t], ins["A"], ins["B"][:, t], ins["C"][:, t], ins["D"],
                          initial_state=h)
        ys.append(y_t)
    y_ref, h_ref = naive_ssd(**ins)
    torch.testing.assert_close(torch.stack(ys, 1), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


def test_chunk_ssd_is_finite_and_exact_under_strong_decays():
    """The log decay summed over a chunk of 16 goes below -300: exp(-sum) would overflow fp32 (max ~e^88)."""
    ins = ssd_inputs(dt_shift=6.0)
    assert (ins["dt"][:, :16].sum(1) * ins["A"]).min() < -300
    y, h = chunk_ssd(**ins, chunk_size=16)
    y_ref, _ = naive_ssd(**ins)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)


def test_chunk_ssd_bf16_inputs_close_to_fp32_loop():
    """bf16 inputs, computed in fp32 inside, output rounded to bf16: error within 1e-2 of the largest output."""
    ins = ssd_inputs(dtype=torch.bfloat16)
    y, h = chunk_ssd(**ins, chunk_size=16)
    assert y.dtype == torch.bfloat16
    y_ref, h_ref = naive_ssd(**{k: v.float() for k, v in ins.items()})
    assert (y.float() - y_ref).abs().max() <= 1e-2 * y_ref.abs().max()
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-4)


# ---- transformers (Hugging Face) as the oracle ---------------------------------------------------------------------
def test_naive_loop_matches_transformers_mamba2_chunk_scan():
    modeling = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    ins = ssd_inputs()
    y, h = naive_ssd(**ins)
    y_hf, h_hf = modeling.mamba2_chunk_scan(ins["x"], ins["dt"], ins["A"], ins["B"], ins["C"], chunk_size=16,
                                            D=ins["D"], initial_states=ins["initial_state"],
                                            return_final_states=True)
    torch.testing.assert_close(y, y_hf, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h, h_hf, rtol=1e-4, atol=1e-5)


def test_step_matches_transformers_mamba2_selective_state_update():
    modeling = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    ins = ssd_inputs()
    t = 5
    y, h = ssd_step(ins["x"][:, t], ins["dt"][:, t], ins["A"], ins["B"][:, t], ins["C"][:, t], ins["D"],
                    initial_state=ins["initial_state"])
    state = ins["initial_state"].clone()  # updated in place by transformers
    y_hf = modeling.mamba2_selective_state_update(  # its per-(head, channel) layout of dt, A and D
        state, ins["x"][:, t], ins["dt"][:, t, :, None].expand(B, H, P), ins["A"][:, None, None].expand(H, P, N),
        ins["B"][:, t], ins["C"][:, t], ins["D"][:, None].expand(H, P))
    torch.testing.assert_close(y, y_hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, state, rtol=1e-5, atol=1e-5)


def _hf_mixer_and_ours(d_model=24, n_heads=4, d_state=7, n_groups=2, expand=2, d_conv=4, chunk_size=8,
                       with_config=False):
    """transformers' Mamba2Mixer (random weights) and our Mamba2 layer holding a copy of them."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    config = transformers.Mamba2Config(hidden_size=d_model, num_heads=n_heads, head_dim=expand * d_model // n_heads,
                                       state_size=d_state, n_groups=n_groups, expand=expand, conv_kernel=d_conv,
                                       chunk_size=chunk_size, num_hidden_layers=1, use_bias=False,
                                       use_conv_bias=True, layer_norm_epsilon=1e-5)
    torch.manual_seed(0)
    hf = Mamba2Mixer(config, layer_idx=0).eval()
    with torch.no_grad():  # move A, D and the norm weight away from their structured initialisation
        hf.A_log.add_(0.3 * torch.randn_like(hf.A_log))
        hf.D.add_(torch.randn_like(hf.D))
        hf.norm.weight.add_(0.3 * torch.randn_like(hf.norm.weight))
    ours = architectures.create_mixer("mamba2", d_model, n_heads, d_state=d_state, n_groups=n_groups, expand=expand,
                                      d_conv=d_conv, chunk_size=chunk_size).eval()
    rename = {"out_proj.weight": "wo.weight", "norm.weight": "norm_weight"}
    ours.load_state_dict({rename.get(k, k): v for k, v in hf.state_dict().items()})
    return (hf, ours, config) if with_config else (hf, ours)


def test_mamba2_layer_matches_transformers_Mamba2Mixer():
    hf, ours = _hf_mixer_and_ours()
    x = torch.randn(2, 37, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.reference(x), hf(x), rtol=1e-4, atol=1e-5)


def test_mamba2_decoding_matches_transformers_Mamba2Mixer_with_its_cache():
    transformers = pytest.importorskip("transformers")
    hf, ours, hf_config = _hf_mixer_and_ours(with_config=True)
    x = torch.randn(2, 20, 24)
    split = 7
    with torch.no_grad():
        cache = transformers.DynamicCache(config=hf_config)
        outs_hf = [hf(x[:, :split], cache_params=cache)]
        y, state = ours.prefill(x[:, :split])
        outs = [y]
        for t in range(split, x.shape[1]):
            outs_hf.append(hf(x[:, t:t + 1], cache_params=cache))
            y_t, state = ours.step(x[:, t], state)
            outs.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(outs, 1), torch.cat(outs_hf, 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state["ssm"], cache.get_recurrent_state(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state["conv"], cache.get_conv_state(0)[:, :, 1:], rtol=0, atol=0)
