"""The linear-recurrent operators (retention, GLA, delta rule, gated delta rule, KDA): every chunkwise and single-step
form against its own fp32 naive loop (the oracle named in each test), on odd shapes (T=63, D_k=60, D_v=44), chunk
sizes 1, 7, 12, 16 and 64 (none divides 63 except 1; 7 and 12 exercise the non-power-of-two blocks of the
channel-wise decays), with an initial state; outputs, final states and gradients with respect to q, k, v, the gates,
beta and the initial state."""
import math

import pytest
import torch
import torch.nn.functional as F

from architectures.ops._chunkwise import decayed_scores
from architectures.ops.delta_rule import chunk_delta_rule, delta_rule_step, naive_delta_rule
from architectures.ops.gated_delta_rule import chunk_gated_delta_rule, gated_delta_rule_step, naive_gated_delta_rule
from architectures.ops.gla import chunk_gla, gla_step, naive_gla
from architectures.ops.kda import chunk_kda, kda_step, naive_kda
from architectures.ops.retention import chunk_retention, naive_retention, retention_step, retnet_log_decays

B, T, H, K, V = 2, 63, 3, 60, 44


def make_inputs(op: str, t: int = T, gate_scale: float = 1.0, generator_seed: int = 0) -> dict:
    """fp32 inputs of one op, with an initial state. gate_scale multiplies the log-decays (strong forgetting)."""
    g = torch.Generator().manual_seed(generator_seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    q, k, v = randn(B, t, H, K), randn(B, t, H, K), randn(B, t, H, V)
    inputs = {"q": q, "k": k, "v": v, "initial_state": 0.5 * randn(B, H, K, V)}
    if op == "retention":
        inputs["log_decay"] = retnet_log_decays(H) * gate_scale
    if op == "gla":
        inputs["g"] = F.logsigmoid(randn(B, t, H, K)) * gate_scale
    if op in ("delta_rule", "gated_delta_rule", "kda"):
        inputs["k"] = F.normalize(k, dim=-1)
        inputs["beta"] = randn(B, t, H).sigmoid()
    if op == "gated_delta_rule":
        inputs["g"] = F.logsigmoid(randn(B, t, H)) * gate_scale
    if op == "kda":
        inputs["g"] = F.logsigmoid(randn(B, t, H, K)) * gate_scale
    return inputs


FORMS = {  # op -> (naive, chunk, step)
    "retention": (naive_retention, chunk_retention, retention_step),
    "gla": (naive_gla, chunk_gla, gla_step),
    "delta_rule": (naive_delta_rule, chunk_delta_rule, delta_rule_step),
    "gated_delta_rule": (naive_gated_delta_rule, chunk_gated_delta_rule, gated_delta_rule_step),
    "kda": (naive_kda, chunk_kda, kda_step),
}
OPS = list(FORMS)
TIME_INPUTS = ("q", "k", "v", "g", "beta")  # inputs with a time axis (dim 1); log_decay and initial_state have none


def run_steps(step, inputs: dict):
    """The step form token by token from the initial state: (out (B, T, H, V), final state)."""
    state, outs = inputs["initial_state"], []
    for t in range(inputs["q"].shape[1]):
        one = {n: (x[:, t:t + 1] if n in TIME_INPUTS else x) for n, x in inputs.items() if n != "initial_state"}
        o, state = step(**one, initial_state=state)
        outs.append(o)
    return torch.cat(outs, dim=1), state


def grads(fn, inputs: dict, seed: int = 1):
    """Gradients of a fixed random linear function of (out, final state) w.r.t. every floating input."""
    leaves = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items()}
    out, state = fn(**leaves)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g)).sum() + (state * torch.randn(state.shape, generator=g)).sum()
    loss.backward()
    return {n: x.grad for n, x in leaves.items()}


@pytest.mark.parametrize("chunk_size", [1, 7, 12, 16, 64])
@pytest.mark.parametrize("op", OPS)
def test_chunk_form_matches_naive_loop(op, chunk_size):
    """With autograd on, and off (inference writes the chunk states into buffers in place)."""
    naive, chunk, _ = FORMS[op]
    inputs = make_inputs(op)
    want_out, want_state = naive(**inputs)
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            got_out, got_state = chunk(**inputs, chunk_size=chunk_size)
        assert got_out.shape == (B, T, H, V) and got_state.shape == (B, H, K, V)
        torch.testing.assert_close(got_out, want_out, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_state, want_state, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", OPS)
def test_chunk_form_gradients_match_naive_loop(op):
    naive, chunk, _ = FORMS[op]
    inputs = make_inputs(op)
    want = grads(naive, inputs)
    for chunk_size in (16, 12):
        got = grads(lambda **kw: chunk(**kw, chunk_size=chunk_size), inputs)
        for name in inputs:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4, msg=f"{op} d/d{name}")


@pytest.mark.parametrize("op", OPS)
def test_step_form_matches_naive_loop(op):
    naive, _, step = FORMS[op]
    inputs = make_inputs(op, t=20)
    want_out, want_state = naive(**inputs)
    got_out, got_state = run_steps(step, inputs)
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)
    want, got = grads(naive, inputs), grads(lambda **kw: run_steps(step, kw), inputs)
    for name in inputs:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=f"{op} d/d{name}")


@pytest.mark.parametrize("op", OPS)
def test_chunk_and_step_forms_in_bfloat16_stay_close_to_naive_loop(op):
    """bf16 inputs (naive loop in fp32 on the same rounded inputs). The chunk form computes in fp32 and rounds its
    output: error <= 2e-2 of the output scale. The step form keeps its state in bf16, rounding at every token:
    <= 5e-2 of the output scale over 63 tokens."""
    naive, chunk, step = FORMS[op]
    inputs = {n: x.bfloat16() for n, x in make_inputs(op).items()}
    want_out, want_state = naive(**inputs)
    scale = want_out.abs().max()
    got_out, got_state = chunk(**inputs, chunk_size=16)
    assert got_out.dtype == torch.bfloat16 and got_state.dtype == torch.bfloat16
    assert (got_out.float() - want_out).abs().max() <= 2e-2 * scale
    assert (got_state.float() - want_state).abs().max() <= 2e-2 * want_state.abs().max()
    step_out, _ = run_steps(step, inputs)
    assert (step_out.float() - want_out).abs().max() <= 5e-2 * scale


@pytest.mark.parametrize("op", ["retention", "gla", "gated_delta_rule", "kda"])
def test_strong_decays_stay_finite_and_match_naive_loop(op):
    """Log-decays 30x larger (down to about -100 per token): cumulative sums inside a chunk reach thousands, where
    exp of the wrong sign would overflow. The chunk form only takes exp of differences <= 0."""
    naive, chunk, _ = FORMS[op]
    inputs = make_inputs(op, gate_scale=30.0)
    want_out, want_state = naive(**inputs)
    got_out, got_state = chunk(**inputs, chunk_size=64)
    assert torch.isfinite(got_out).all() and torch.isfinite(got_state).all()
    torch.testing.assert_close(got_out, want_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_state, want_state, rtol=1e-4, atol=1e-4)
    got = grads(lambda **kw: chunk(**kw, chunk_size=64), inputs)
    assert all(torch.isfinite(x).all() for x in got.values())


def test_padding_does_not_leak_into_the_final_state():
    """T=63 in chunks of 16: the last chunk is padded. Continuing from the final state equals running all at once."""
    inputs = make_inputs("kda")
    whole_out, whole_state = chunk_kda(**inputs, chunk_size=16)
    first = {n: (x[:, :40] if n in TIME_INPUTS else x) for n, x in inputs.items()}
    out1, state1 = chunk_kda(**first, chunk_size=16)
    rest = {n: x[:, 40:] for n, x in inputs.items() if n in TIME_INPUTS}
    out2, state2 = chunk_kda(**rest, initial_state=state1, chunk_size=16)
    torch.testing.assert_close(torch.cat([out1, out2], dim=1), whole_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state2, whole_state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("C", [1, 2, 3, 8, 12, 16, 20, 64])
def test_decayed_scores_equal_the_dense_formula(C):
    """M_ts = sum_d x_td y_sd exp(b_td - b_sd) for s <= t: the halving construction against the formula written
    out with the full (C, C, K) decay tensor (fine here: moderate decays, fp64)."""
    g = torch.Generator().manual_seed(C)
    x, y = (torch.randn(3, C, 5, generator=g, dtype=torch.float64) for _ in range(2))
    b = F.logsigmoid(torch.randn(3, C, 5, generator=g, dtype=torch.float64)).cumsum(1)
    decay = (b[:, :, None, :] - b[:, None, :, :]).exp()  # (3, C_t, C_s, 5)
    want = torch.einsum("btk,bsk,btsk->bts", x, y, decay).tril()
    got_x, got_y = decayed_scores((x, y), y, b)
    torch.testing.assert_close(got_x, want)
    torch.testing.assert_close(got_y, torch.einsum("btk,bsk,btsk->bts", y, y, decay).tril())


def test_retention_decays_are_the_papers():
    gamma = retnet_log_decays(4).exp()
    torch.testing.assert_close(gamma, 1 - 2.0 ** (-5 - torch.arange(4.0)))
    assert math.isclose(float(gamma[0]), 31 / 32, rel_tol=1e-6)
