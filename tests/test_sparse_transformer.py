"""Sparse Transformer (strided, merged heads): the fast op equals dense attention under the pattern's mask, the oracle
loop too, the op never builds an n x n tensor, and decoding keeps the prefill's stride."""
import math

import pytest
import torch

import architectures
from architectures.ops.strided_sparse import (default_stride, naive_strided_sparse_attention, strided_positions,
                                              strided_sparse_attention)

from ._tensors import LargestTensor
from .conftest import make_mixer


def strided_mask(T: int, stride: int) -> torch.Tensor:
    """(T, T) True where query i sees key j: j <= i and (i - j < stride or (i - j) mod stride == 0)."""
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (j <= i) & ((i - j < stride) | ((i - j) % stride == 0))


def dense_masked_attention(q, k, v, mask):
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhij,bjhd->bihd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v)


@pytest.mark.parametrize("stride", [1, 2, 5, 8, 9, 63, 64, 100])
def test_equals_dense_attention_under_the_strided_mask(stride):
    q, k, v = (torch.randn(2, 63, 3, 60, dtype=torch.float64, requires_grad=True) for _ in range(3))
    want = dense_masked_attention(q, k, v, strided_mask(63, stride))
    got = strided_sparse_attention(q, k, v, stride)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_naive_loop_is_the_same_pattern():
    q, k, v = (torch.randn(1, 40, 2, 8) for _ in range(3))
    torch.testing.assert_close(naive_strided_sparse_attention(q, k, v, 6),
                               dense_masked_attention(q, k, v, strided_mask(40, 6)), rtol=1e-5, atol=1e-6)


def test_the_pattern_is_sparse_and_two_hop_complete():
    T, l = 100, 10
    mask = strided_mask(T, l)
    assert [strided_positions(i, l) for i in range(T)] == [mask[i].nonzero().flatten().tolist() for i in range(T)]
    assert mask.sum(1).max() <= l + T // l  # ~ 2 sqrt(n) keys per query
    reach = (mask.double() @ mask.double()) > 0  # two hops (local then strided) reach every earlier position
    assert torch.equal(reach, torch.ones(T, T, dtype=torch.bool).tril())


def test_default_stride_is_ceil_sqrt():
    assert [default_stride(n) for n in (1, 2, 4, 5, 63, 64, 1024, 2048, 4096)] == [1, 2, 2, 3, 8, 8, 32, 46, 64]


def test_no_n_by_n_tensor():
    T = 2048
    q, k, v = (torch.randn(1, T, 1, 16) for _ in range(3))
    with LargestTensor() as largest:
        strided_sparse_attention(q, k, v, default_stride(T))
    # the score blocks hold T * (2l + T/l) ~ 3 T sqrt(T) entries, a fifteenth of T^2 here
    assert largest.numel <= T * (3 * default_stride(T) + 1) < T * T / 8


def test_stride_none_follows_the_length_and_decoding_keeps_the_prefills():
    m = make_mixer("sparse_transformer", stride=None)
    x = torch.randn(2, 63, m.d_model)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.reference(x), rtol=1e-4, atol=1e-5)  # stride ceil(sqrt(63)) = 8
        y_pre, state = m.prefill(x[:, :20])  # stride ceil(sqrt(20)) = 5, kept for the rest of the sequence
        assert state["stride"] == 5
        outs = [y_pre]
        for t in range(20, 63):
            y_t, state = m.step(x[:, t], state)
            outs.append(y_t[:, None])
        fixed = make_mixer("sparse_transformer", stride=5)
        torch.testing.assert_close(torch.cat(outs, 1), fixed(x), rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="explicit stride"):
            m.init_state(2)


def test_is_registered_with_the_guides_claim():
    spec = architectures.get_mixer("sparse_transformer").spec
    assert spec.time_exponent == 1.5 and spec.claimed_time == "O(N√N)" and spec.paper.arxiv == "1904.10509"
