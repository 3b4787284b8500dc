"""Longformer: the fast op equals dense attention under the window + global mask (causal and bidirectional), matches
Hugging Face's LongformerSelfAttention in bidirectional mode, never builds an n x n tensor, and its decode cache is
bounded once the last global token has passed."""
import math

import pytest
import torch

import architectures
from architectures import measured_state_bytes
from architectures.ops.longformer import longformer_attention, naive_longformer_attention

from ._tensors import LargestTensor
from .conftest import make_mixer


def longformer_mask(T: int, window: int, global_positions, causal: bool) -> torch.Tensor:
    """(T, T) True where query i sees key j: |i - j| <= window // 2, or i or j global; and j <= i if causal."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    glob = torch.zeros(T, dtype=torch.bool)
    glob[[p for p in global_positions if p < T]] = True
    mask = ((i - j).abs() <= window // 2) | glob[:, None] | glob[None, :]
    return mask & (j <= i) if causal else mask


def dense_masked_attention(q, k, v, mask):
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhij,bjhd->bihd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window,global_positions", [
    (16, (0, 21, 40)), (2, ()), (10, (62,)), (6, (5, 5, 6, 100)), (128, (3,)), (20, tuple(range(0, 63, 7)))])
def test_equals_dense_attention_under_the_mask(causal, window, global_positions):
    q, k, v = (torch.randn(2, 63, 2, 60, dtype=torch.float64, requires_grad=True) for _ in range(3))
    want = dense_masked_attention(q, k, v, longformer_mask(63, window, global_positions, causal))
    got = longformer_attention(q, k, v, window=window, global_positions=global_positions, causal=causal)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_naive_loop_is_the_same_pattern():
    q, k, v = (torch.randn(1, 30, 2, 8) for _ in range(3))
    for causal in (True, False):
        torch.testing.assert_close(
            naive_longformer_attention(q, k, v, window=6, global_positions=(2, 17), causal=causal),
            dense_masked_attention(q, k, v, longformer_mask(30, 6, (2, 17), causal)), rtol=1e-5, atol=1e-6)


def test_no_n_by_n_tensor():
    T, window = 2048, 64
    q, k, v = (torch.randn(1, T, 1, 16) for _ in range(3))
    for causal in (True, False):
        with LargestTensor() as largest:
            longformer_attention(q, k, v, window=window, global_positions=(0, 1000), causal=causal)
        assert largest.numel <= T * (3 * window // 2 + 2) < T * T / 8  # the band: (n/c) blocks x c x 3c scores


def test_matches_hugging_face_longformer_self_attention_bidirectional():
    """HF's layer with its global projections set equal to the local ones and zero biases (ours has one set of
    projections and none), no RoPE (HF's positions live in the embeddings), our output projection the identity.
    T = 63 is padded to a multiple of the window as LongformerModel does, the pad masked out."""
    pytest.importorskip("transformers")
    from transformers.models.longformer.configuration_longformer import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    T, window, glob = 63, 16, (0, 21, 40)
    ours = make_mixer("longformer", causal=False, window=window, global_positions=glob, rope_theta=None)
    cfg = LongformerConfig(hidden_size=ours.d_model, num_attention_heads=ours.n_heads, attention_window=[window],
                           attention_probs_dropout_prob=0.0)
    hf = LongformerSelfAttention(cfg, layer_id=0).eval()
    with torch.no_grad():
        for ours_lin, names in [(ours.wq, ("query", "query_global")), (ours.wk, ("key", "key_global")),
                                (ours.wv, ("value", "value_global"))]:
            for name in names:
                getattr(hf, name).weight.copy_(ours_lin.weight)
                getattr(hf, name).bias.zero_()
        ours.wo.weight.copy_(torch.eye(ours.d_model))

    x = torch.randn(2, T, ours.d_model)
    padded = torch.cat([x, torch.zeros(2, 1, ours.d_model)], dim=1)  # (2, 64, D)
    mask = torch.zeros(2, T + 1)  # HF's convention: -10000 no attention, 0 local, +10000 global
    mask[:, T] = -10000.0
    mask[:, list(glob)] = 10000.0
    with torch.no_grad():
        want = hf(padded, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
                  is_global_attn=True)[0][:, :T]
        got = ours(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_decode_cache_is_window_plus_globals_after_the_last_global():
    m = make_mixer("longformer", window=16, global_positions=(0, 21, 40))
    per_row = 2 * m.n_heads * m.head_dim * 4
    assert m.state_bytes(1, 30, torch.float32) == 30 * per_row  # the global token at 40 will read its whole past
    assert m.state_bytes(1, 41, torch.float32) == (8 + 2) * per_row  # last 8 keys (33..40) + the globals 0, 21
    assert m.state_bytes(1, 5000, torch.float32) == (8 + 3) * per_row  # last 8 keys + the 3 global tokens
    x = torch.randn(1, 60, m.d_model)
    with torch.no_grad():
        _, state = m.prefill(x)
    assert measured_state_bytes(state) == m.state_bytes(1, 60, torch.float32)


def test_bidirectional_mode_does_not_decode():
    m = make_mixer("longformer", causal=False)
    with pytest.raises(ValueError, match="causal"):
        m.init_state(1)


def test_is_registered_with_the_guides_claim():
    spec = architectures.get_mixer("longformer").spec
    assert spec.time_exponent == 1 and {"causal", "bidirectional", "decode"} <= spec.modes
