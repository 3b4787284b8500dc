"""Our linear-recurrent operators against flash-linear-attention's PyTorch references (fla.ops.*.naive), code that no
one here wrote: both our naive loop and our chunkwise form are compared, with an initial state where fla's reference
takes one. Conventions matched: (B, T, H, D) layout (fla's delta-rule and retention references use (B, H, T, D)),
scale D_k^-0.5, gates in log space, beta per token and head, state (B, H, D_k, D_v). Skipped without fla."""
import pytest
import torch
import torch.nn.functional as F

from architectures.ops.delta_rule import chunk_delta_rule, naive_delta_rule
from architectures.ops.gated_delta_rule import chunk_gated_delta_rule, naive_gated_delta_rule
from architectures.ops.gla import chunk_gla, naive_gla
from architectures.ops.kda import chunk_kda, naive_kda
from architectures.ops.retention import chunk_retention, naive_retention, retnet_log_decays

B, H, K, V = 2, 3, 60, 44
TOL = dict(rtol=1e-4, atol=1e-4)


def sampler(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=g)


def heads_first(*xs):
    return [x.transpose(1, 2) for x in xs]  # (B, T, H, ...) -> (B, H, T, ...)


def test_retention_matches_fla_naive_retention():
    fla = pytest.importorskip("fla.ops.retention.naive")
    randn = sampler()
    T = 63
    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    want = fla.naive_retention(*heads_first(q, k, v)).transpose(1, 2)  # the parallel form (Q K^T * D) V, no state
    log_decay = retnet_log_decays(H)
    torch.testing.assert_close(naive_retention(q, k, v, log_decay)[0], want, **TOL)
    torch.testing.assert_close(chunk_retention(q, k, v, log_decay, chunk_size=16)[0], want, **TOL)


def test_gla_matches_fla_naive_recurrent_gla():
    fla = pytest.importorskip("fla.ops.gla.naive")
    randn = sampler()
    T = 63
    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    g = F.logsigmoid(randn(B, T, H, K))
    S0 = randn(B, H, K, V)
    want, want_S = fla.naive_recurrent_gla(q, k, v, g, initial_state=S0, output_final_state=True)
    for got, got_S in (naive_gla(q, k, v, g, S0), chunk_gla(q, k, v, g, S0, chunk_size=16)):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_S, want_S, **TOL)


def test_delta_rule_matches_fla_delta_rule_recurrence():
    fla = pytest.importorskip("fla.ops.delta_rule.naive")
    randn = sampler()
    T = 63
    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    beta = randn(B, T, H).sigmoid()
    S0 = randn(B, H, K, V)
    want, want_S = fla.delta_rule_recurrence(*heads_first(q, k, v, beta), initial_state=S0)
    want = want.transpose(1, 2)
    for got, got_S in (naive_delta_rule(q, k, v, beta, S0), chunk_delta_rule(q, k, v, beta, S0, chunk_size=16)):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_S, want_S, **TOL)


def test_delta_rule_matches_fla_delta_rule_chunkwise():
    """fla's chunked reference (its own WY form): T a multiple of its chunk (32), no initial state."""
    fla = pytest.importorskip("fla.ops.delta_rule.naive")
    randn = sampler()
    T = 64
    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    beta = randn(B, T, H).sigmoid()
    want, want_S = fla.delta_rule_chunkwise(*heads_first(q, k, v, beta), chunk_size=32)
    got, got_S = chunk_delta_rule(q, k, v, beta, chunk_size=16)
    torch.testing.assert_close(got, want.transpose(1, 2), **TOL)
    torch.testing.assert_close(got_S, want_S, **TOL)


@pytest.mark.parametrize("reference", ["naive_recurrent_gated_delta_rule", "naive_chunk_gated_delta_rule"])
def test_gated_delta_rule_matches_fla(reference):
    fla = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    randn = sampler()
    T = 63
    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    g, beta = F.logsigmoid(randn(B, T, H)), randn(B, T, H).sigmoid()
    S0 = randn(B, H, K, V)
    if reference == "naive_recurrent_gated_delta_rule":  # note fla's argument order: beta before g
        want, want_S = fla.naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=S0,
                                                            output_final_state=True)
    else:
        want, want_S = fla.naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=16, initial_state=S0,
                                                        output_final_state=True)
    for got, got_S in (naive_gated_delta_rule(q, k, v, g, beta, S0),
                       chunk_gated_delta_rule(q, k, v, g, beta, S0, chunk_size=16)):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_S, want_S, **TOL)


@pytest.mark.parametrize("reference", ["naive_recurrent_kda", "naive_chunk_kda"])
def test_kda_matches_fla(reference):
    fla = pytest.importorskip("fla.ops.kda.naive")
    randn = sampler()
    T = 64  # naive_chunk_kda needs a multiple of its chunk size
    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    g, beta = F.logsigmoid(randn(B, T, H, K)), randn(B, T, H).sigmoid()
    S0 = randn(B, H, K, V)
    kwargs = dict(initial_state=S0, output_final_state=True)
    if reference == "naive_chunk_kda":
        kwargs["chunk_size"] = 16
    want, want_S = getattr(fla, reference)(q, k, v, g, beta, **kwargs)
    for got, got_S in (naive_kda(q, k, v, g, beta, S0), chunk_kda(q, k, v, g, beta, S0, chunk_size=16)):
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(got_S, want_S, **TOL)


def test_gated_delta_rule_at_gate_zero_is_the_delta_rule_of_fla():
    """log alpha = 0: fla's gated reference reduces to the plain delta rule, which our delta-rule forms compute."""
    fla = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    randn = sampler()
    T = 40
    q, k, v = randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V)
    beta = randn(B, T, H).sigmoid()
    want, _ = fla.naive_recurrent_gated_delta_rule(q, k, v, beta, torch.zeros(B, T, H))
    torch.testing.assert_close(chunk_delta_rule(q, k, v, beta, chunk_size=8)[0], want, **TOL)
