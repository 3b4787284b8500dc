"""The checks of the fidelity kit (see the package docstring). Each check takes a mixer name and impl and raises
``AssertionError`` with what differs, or ``Skip`` when it does not apply (e.g. decode checks of a mixer that does
not decode). Shapes are odd on purpose (T=63, d_model=120, head dim 60), with the spec's ``test_hparams``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import architectures
from architectures import measured_state_bytes

B, T, D_MODEL, N_HEADS = 2, 63, 120, 2


class Skip(Exception):
    """The check does not apply to this mixer (the reason is reported)."""


@dataclass
class CheckResult:
    check: str
    status: str  # passed | failed | skipped
    message: str = ""


def make(name: str, impl: str | None = None, causal: bool = True, dtype=torch.float32):
    cls = architectures.get_mixer(name)
    torch.manual_seed(0)
    m = architectures.create_mixer(name, D_MODEL, N_HEADS, causal=causal, impl=impl, **dict(cls.spec.test_hparams))
    return m.to(dtype)


def _modes(name: str) -> frozenset:
    return architectures.get_mixer(name).spec.modes


def _close(got, want, what: str, rtol=1e-4, atol=1e-5) -> None:
    try:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    except AssertionError as err:
        raise AssertionError(f"{what}: {str(err).splitlines()[0]} {' '.join(str(err).split()[1:12])}") from None


def naive_oracle(name: str, impl: str | None) -> None:
    """forward == reference (the naive fp32 loop), outputs and gradients of the input and every parameter."""
    for causal in [c for c, mode in ((True, "causal"), (False, "bidirectional")) if mode in _modes(name)]:
        m = make(name, impl, causal)
        x = torch.randn(B, T, m.d_model, requires_grad=True)
        y, y_ref = m(x), m.reference(x)
        assert y.shape == (B, T, m.d_model), f"output shape {tuple(y.shape)}, expected {(B, T, m.d_model)}"
        _close(y, y_ref, f"forward vs reference ({'causal' if causal else 'bidirectional'})")
        g = torch.randn_like(y)
        params = list(m.parameters())
        for i, (a, b) in enumerate(zip(torch.autograd.grad(y, [x, *params], g),
                                       torch.autograd.grad(y_ref, [x, *params], g))):
            _close(a, b, "input gradient" if i == 0 else f"gradient of parameter {i - 1}",
                   atol=1e-5 + 1e-6 * b.abs().max().item())


def causality(name: str, impl: str | None) -> None:
    """Changing tokens t.. never changes outputs before t; it does change the output at t."""
    if "causal" not in _modes(name):
        raise Skip("not causal")
    m = make(name, impl)
    x = torch.randn(B, T, m.d_model)
    with torch.no_grad():
        y = m(x)
        for t in (1, 17, T - 1):
            x2 = x.clone()
            x2[:, t:] = torch.randn_like(x2[:, t:]) * 3
            y2 = m(x2)
            leak = (y2[:, :t] - y[:, :t]).abs().max().item()
            assert leak <= 1e-6, f"outputs before t={t} changed by {leak:.3g} when tokens from t on changed"
            assert not torch.allclose(y2[:, t:], y[:, t:]), f"the change at t={t} does not reach the output at t"


def bidirectional_sees_the_future(name: str, impl: str | None) -> None:
    if "bidirectional" not in _modes(name):
        raise Skip("no bidirectional mode")
    m = make(name, impl, causal=False)
    x = torch.randn(B, T, m.d_model)
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(m(x)[:, 0], m(x2)[:, 0]), "the first output ignores the last token"


def decode_equals_forward(name: str, impl: str | None) -> None:
    """step by step from init_state, and prefill + steps, reproduce the forward; steps return a new state."""
    if "decode" not in _modes(name):
        raise Skip("does not decode")
    m = make(name, impl)
    x = torch.randn(B, T, m.d_model)
    with torch.no_grad():
        y = m(x)
        state, outs = m.init_state(B), []
        for t in range(T):
            y_t, new = m.step(x[:, t], state)
            assert new is not state, "step must return its state, not mutate the old one"
            state = new
            outs.append(y_t)
        _close(torch.stack(outs, dim=1), y, "step by step vs forward")
        for split in (1, 20, 48):
            y_pre, state = m.prefill(x[:, :split])
            _close(y_pre, y[:, :split], f"prefill of {split} tokens vs forward")
            outs = []
            for t in range(split, T):
                y_t, state = m.step(x[:, t], state)
                outs.append(y_t)
            _close(torch.stack(outs, dim=1), y[:, split:], f"steps after a prefill of {split} vs forward")


def state_bytes(name: str, impl: str | None) -> None:
    """The measured state equals state_bytes(batch, n, dtype) at every length, and scales with batch and dtype."""
    if "decode" not in _modes(name):
        raise Skip("does not decode")
    m = make(name, impl)
    x = torch.randn(B, T, m.d_model)
    with torch.no_grad():
        state = m.init_state(B)
        assert measured_state_bytes(state) == m.state_bytes(B, 0, torch.float32), "initial state"
        for t in range(T):
            _, state = m.step(x[:, t], state)
            got, want = measured_state_bytes(state), m.state_bytes(B, t + 1, torch.float32)
            assert got == want, f"after {t + 1} tokens the state holds {got} bytes, state_bytes says {want}"
        x64 = torch.randn(3, 40, m.d_model, dtype=torch.float64)
        _, state = m.double().prefill(x64)
    assert measured_state_bytes(state) == m.state_bytes(3, 40, torch.float64), "float64 prefill state"
    assert m.state_bytes(3, 40, torch.float64) == 3 * m.state_bytes(1, 40, torch.float64), "not linear in batch"
    assert m.state_bytes(1, 40, torch.float64) == 2 * m.state_bytes(1, 40, torch.float32), "not 2x from fp32"


def gradients(name: str, impl: str | None) -> None:
    """A loss on the output gives a finite gradient to the input and to every parameter."""
    m = make(name, impl, causal="causal" in _modes(name))
    x = torch.randn(B, T, m.d_model, requires_grad=True)
    m(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "input gradient missing or not finite"
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead, f"parameters without a finite gradient: {dead}"


def dtypes(name: str, impl: str | None) -> None:
    """float64 matches float32; bfloat16 runs and stays within a few percent of the output scale."""
    causal = "causal" in _modes(name)
    m = make(name, impl, causal)
    x = torch.randn(B, T, m.d_model)
    with torch.no_grad():
        y32 = m(x)
        _close(make(name, impl, causal, torch.float64)(x.double()).float(), y32, "float64 vs float32",
               rtol=1e-3, atol=1e-4)
        y16 = make(name, impl, causal, torch.bfloat16)(x.bfloat16())
        assert y16.dtype == torch.bfloat16, f"bfloat16 input gave {y16.dtype}"
        err, bound = (y16.float() - y32).abs().amax(-1), 0.05 * y32.abs().max() + 1e-3
        share = (err <= bound).float().mean().item()
        need = 0.75 if getattr(m, "discrete_routing", False) else 1.0  # hashing can move a token to another bucket
        assert share >= need, f"bfloat16 within 5% of the output scale at {share:.0%} of positions"


CHECKS: dict[str, Callable[[str, str | None], None]] = {
    "naive oracle": naive_oracle, "causality": causality, "bidirectional sees the future": bidirectional_sees_the_future,
    "decode == forward": decode_equals_forward, "state bytes": state_bytes, "gradients": gradients, "dtypes": dtypes,
}


def check_mixer(name: str, impl: str | None = None) -> list[CheckResult]:
    """Every check of the kit on a registered mixer (its default impl unless named)."""
    architectures.get_mixer(name)  # an unknown name raises here, with "did you mean"
    results = []
    for check, fn in CHECKS.items():
        try:
            fn(name, impl)
            results.append(CheckResult(check, "passed"))
        except Skip as why:
            results.append(CheckResult(check, "skipped", str(why)))
        except Exception as err:  # noqa: BLE001 - a failing check is a result, with what failed
            results.append(CheckResult(check, "failed", f"{type(err).__name__}: {err}"[:500]))
    return results
