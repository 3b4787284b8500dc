"""The linear-recurrent mixers (retnet, gla, deltanet, gated_deltanet, kda) beyond the registry-wide contract tests:
their claims, the explicit fla backend, a decode state that does not grow, and the short convolution's streaming."""
import importlib.util

import pytest
import torch

import architectures
from architectures import measured_state_bytes
from architectures.mixers._recurrent_layer import ShortConv

from .conftest import make_mixer

FAMILY = ["retnet", "gla", "deltanet", "gated_deltanet", "kda"]


@pytest.mark.parametrize("name", FAMILY)
def test_spec_claims_linear_time_and_memory_and_a_constant_state(name):
    spec = architectures.get_mixer(name).spec
    assert (spec.time_exponent, spec.memory_exponent, spec.state_exponent) == (1, 1, 0)
    assert {"causal", "decode"} <= spec.modes and spec.default_impl == "torch"
    if name in ("retnet", "gated_deltanet"):  # not in the guide's Master Comparison Table: the paper's claim
        assert spec.paper.arxiv in spec.claim_source and "not in the Master Comparison Table" in spec.claim_source
    else:
        assert spec.claim_source == "guide 000, Master Comparison Table"


@pytest.mark.parametrize("name", FAMILY)
def test_fla_backend_is_an_explicit_impl_that_explains_why_it_cannot_run_here(name):
    cls = architectures.get_mixer(name)
    assert "fla" in cls.spec.impls and cls.spec.impls[0] == "torch"
    assert cls.unavailable_reason("torch", torch.device("cpu"), torch.float32) is None
    reason = cls.unavailable_reason("fla", torch.device("cpu"), torch.float32)
    if importlib.util.find_spec("fla") is None:
        assert reason == "flash-linear-attention not installed"
    else:
        assert reason == "fla Triton kernels need CUDA"
    assert architectures.create_mixer(name, 64, 2, impl="fla").impl == "fla"  # constructing it is fine


@pytest.mark.parametrize("name", FAMILY)
def test_decode_state_does_not_grow_with_context(name):
    m = make_mixer(name)
    sizes = set()
    with torch.no_grad():
        for n in (3, 37, 150):
            _, state = m.prefill(torch.randn(1, n, m.d_model))
            sizes.add(measured_state_bytes(state))
            assert state["pos"] == n
    assert sizes == {m.state_bytes(1, 0, torch.float32)} == {m.state_bytes(1, 10 ** 6, torch.float32)}


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_short_conv_streams_exactly_in_pieces_and_steps(kernel_size):
    torch.manual_seed(0)
    conv = ShortConv(6, kernel_size)
    x = torch.randn(2, 11, 6)
    with torch.no_grad():
        full, _ = conv(x)
        torch.testing.assert_close(full, conv.reference(x))
        y1, cache = conv(x[:, :2])  # fewer tokens than the kernel: the cache still holds kernel_size - 1 inputs
        assert cache.shape == (2, kernel_size - 1, 6)
        y2, cache = conv(x[:, 2:7], cache)
        steps = []
        for t in range(7, 11):
            y_t, cache = conv.step(x[:, t], cache)
            steps.append(y_t)
    torch.testing.assert_close(torch.cat([y1, y2, torch.stack(steps, 1)], dim=1), full, rtol=1e-6, atol=1e-6)


def test_short_conv_is_causal_and_reaches_back_kernel_size_tokens():
    torch.manual_seed(0)
    conv = ShortConv(3, 4)
    x = torch.randn(1, 12, 3)
    x2 = x.clone()
    x2[:, 6] += 1.0
    with torch.no_grad():
        diff = (conv(x2)[0] - conv(x)[0]).abs().sum(-1)[0]
    assert (diff[:6] == 0).all() and (diff[6:10] > 0).all() and (diff[10:] == 0).all()
