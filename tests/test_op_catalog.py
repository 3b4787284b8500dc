"""Every implementation in the op catalogue (ours and peers') computes the same thing as our naive loop.

This also makes each peer reference an oracle of ours: registering an implementation enrols it here."""
import pytest
import torch

from architectures.ops import catalog

catalog.load_all()
CASES = [(op, impl) for op in catalog.OPS.list() for impl in catalog.OPS.get(op).impls if impl != "naive"]


def test_every_op_has_ours_fast_and_naive():
    for op in catalog.OPS.list():
        impls = catalog.OPS.get(op).impls
        assert "naive" in impls and impls["naive"].source == "ours", op
        assert any(i.source == "ours" and n != "naive" for n, i in impls.items()), op


@pytest.mark.parametrize("op,impl", CASES)
def test_implementation_matches_naive(op, impl):
    entry = catalog.OPS.get(op)
    if entry.impls[impl].missing():
        pytest.skip(f"{impl} needs {entry.impls[impl].missing()}")
    inputs = entry.make_inputs(1, 128, 2, 16, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))
    want = entry.impls["naive"].fn(inputs)
    got = entry.impls[impl].fn(inputs)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-3, atol=1e-4)
