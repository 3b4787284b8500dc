"""Mamba: the chunked scan and the decoding step against our fp32 loop (naive_selective_scan), and our loop, step and
layer against Hugging Face transformers' PyTorch Mamba path (mamba_selective_scan, mamba_selective_state_update,
MambaMixer with its cache). Odd shapes: T = 63, 7 channels, state size 5."""
import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.ops.selective_scan import chunk_selective_scan, naive_selective_scan, selective_scan_step

B, T, d, N = 2, 63, 7, 5


def scan_inputs(t=T, dtype=torch.float32, dt_shift=-1.0, requires_grad=False, seed=0):
    """x, dt (softplus, ~0.3), A (negative, per channel and state), B, C, D, h0."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    ins = {"x": randn(B, t, d), "dt": F.softplus(randn(B, t, d) + dt_shift), "A": -torch.exp(randn(d, N)),
           "B": randn(B, t, N), "C": randn(B, t, N), "D": randn(d), "initial_state": randn(B, d, N)}
    return {k: v.to(dtype).requires_grad_(requires_grad) for k, v in ins.items()}


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 63, 64, 100])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_scan_matches_naive_loop(chunk_size, with_state):
    ins = scan_inputs()
    if not with_state:
        ins["initial_state"] = None
    y, h = chunk_selective_scan(**ins, chunk_size=chunk_size)
    y_ref, h_ref = naive_selective_scan(**ins)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 16])
def test_chunk_scan_gradients_match_naive_loop(chunk_size):
    ins = scan_inputs(requires_grad=True)
    leaves = list(ins.values())
    g_y, g_h = torch.randn(B, T, d), torch.randn(B, d, N)

    def grads(fn, **kw):
        y, h = fn(**ins, **kw)
        return torch.autograd.grad((y * g_y).sum() + (h * g_h).sum(), leaves)

    for got, want in zip(grads(chunk_selective_scan, chunk_size=chunk_size), grads(naive_selective_scan)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_step_matches_naive_loop():
    ins = scan_inputs()
    h = ins["initial_state"]
    ys = []
    for t in range(T):
        y_t, h = selective_scan_step(ins["x"][:, t], ins["dt"][:, t], ins["A"], ins["B"][:, t], ins["C"][:, t],
                                     ins["D"], initial_state=h)
        ys.append(y_t)
    y_ref, h_ref = naive_selective_scan(**ins)
    torch.testing.assert_close(torch.stack(ys, 1), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


def test_chunk_scan_is_finite_and_exact_under_strong_decays():
    """Large dt: the log decay summed over one chunk of 16 reaches below -300, so exp(-sum), the factor a split
    exp(L_t) exp(-L_s) would need, overflows fp32 (max ~e^88)."""
    ins = scan_inputs(dt_shift=3.0)
    assert (ins["dt"][:, :16].sum(1)[..., None] * ins["A"]).min() < -300
    y, h = chunk_selective_scan(**ins, chunk_size=16)
    y_ref, h_ref = naive_selective_scan(**ins)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_chunk_scan_bf16_inputs_close_to_fp32_loop():
    """bf16 inputs are scanned in fp32 inside and the output is rounded to bf16 (8 bits of mantissa): the error is
    that rounding, at most 2^-8 of the output's magnitude (we allow 1e-2 of the largest output)."""
    ins = scan_inputs(dtype=torch.bfloat16)
    y, h = chunk_selective_scan(**ins, chunk_size=16)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    y_ref, h_ref = naive_selective_scan(**{k: v.float() for k, v in ins.items()})
    assert (y.float() - y_ref).abs().max() <= 1e-2 * y_ref.abs().max()
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


def test_memory_is_linear_in_length():
    from harness.measure import LiveTensorBytes

    peaks = []
    for t in (512, 1024, 2048):
        ins = scan_inputs(t=t)
        with torch.no_grad(), LiveTensorBytes() as live:
            chunk_selective_scan(**ins, chunk_size=32)
        peaks.append(live.peak)
    assert peaks[1] / peaks[0] == pytest.approx(2, rel=0.1) and peaks[2] / peaks[1] == pytest.approx(2, rel=0.1)


# ---- transformers (Hugging Face) as the oracle ---------------------------------------------------------------------
def _channels_first(t):  # (B, T, X) -> (B, X, T)
    return t.transpose(1, 2)


def test_naive_loop_matches_transformers_mamba_selective_scan():
    modeling = pytest.importorskip("transformers.models.mamba.modeling_mamba")
    ins = scan_inputs()
    ins["initial_state"] = None  # transformers' scan starts from zeros
    y, h = naive_selective_scan(**ins)
    y_hf, h_hf = modeling.mamba_selective_scan(
        _channels_first(ins["x"]), _channels_first(ins["dt"]), ins["A"], _channels_first(ins["B"]),
        _channels_first(ins["C"]), D=ins["D"], return_last_state=True)
    torch.testing.assert_close(y, _channels_first(y_hf), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_hf, rtol=1e-5, atol=1e-5)


def test_step_matches_transformers_mamba_selective_state_update():
    modeling = pytest.importorskip("transformers.models.mamba.modeling_mamba")
    ins = scan_inputs()
    t = 5
    y, h = selective_scan_step(ins["x"][:, t], ins["dt"][:, t], ins["A"], ins["B"][:, t], ins["C"][:, t], ins["D"],
                               initial_state=ins["initial_state"])
    state = ins["initial_state"].clone()  # transformers updates the state in place
    y_hf = modeling.mamba_selective_state_update(state, ins["x"][:, t], ins["dt"][:, t], ins["A"], ins["B"][:, t],
                                                 ins["C"][:, t], ins["D"])
    torch.testing.assert_close(y, y_hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, state, rtol=1e-5, atol=1e-5)


def _hf_mixer_and_ours(d_model=24, d_state=5, expand=2, d_conv=4, dt_rank=3, chunk_size=8):
    """transformers' MambaMixer (random weights) and our Mamba layer holding a copy of them."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba.modeling_mamba import MambaMixer

    config = transformers.MambaConfig(hidden_size=d_model, state_size=d_state, expand=expand, conv_kernel=d_conv,
                                      time_step_rank=dt_rank, num_hidden_layers=1, use_bias=False,
                                      use_conv_bias=True)
    torch.manual_seed(0)
    hf = MambaMixer(config, layer_idx=0).eval()
    with torch.no_grad():  # move A and D away from their structured initialisation
        hf.A_log.add_(0.3 * torch.randn_like(hf.A_log))
        hf.D.add_(torch.randn_like(hf.D))
    ours = architectures.create_mixer("mamba", d_model, 1, d_state=d_state, expand=expand, d_conv=d_conv,
                                      dt_rank=dt_rank, chunk_size=chunk_size).eval()
    weights = {("wo." + k[len("out_proj."):] if k.startswith("out_proj.") else k): v
               for k, v in hf.state_dict().items()}
    ours.load_state_dict(weights)
    return hf, ours


def test_mamba_layer_matches_transformers_MambaMixer():
    hf, ours = _hf_mixer_and_ours()
    x = torch.randn(2, 37, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours.reference(x), hf(x), rtol=1e-4, atol=1e-5)


def test_mamba_decoding_matches_transformers_MambaMixer_with_its_cache():
    transformers = pytest.importorskip("transformers")
    hf, ours = _hf_mixer_and_ours()
    x = torch.randn(2, 20, 24)
    split = 7
    with torch.no_grad():
        cache = transformers.DynamicCache(config=hf.config)
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
