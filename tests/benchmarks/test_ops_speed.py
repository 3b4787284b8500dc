"""Forward time of every implementation of every operator in the op catalogue (architectures.ops.catalog) at T=4096,
B=1, H=4, D=64, fp32, on CPU: our chunkwise form, our naive loop, and peers' PyTorch references (fla's
naive_recurrent_* / naive_chunk_*, ...), grouped per op so that pytest-benchmark prints them side by side. Ops
registered later join automatically. No speed assertions: the figures are read, not tested.

    python -m pytest tests/benchmarks/test_ops_speed.py --benchmark-enable [-k gla]
"""
import pytest
import torch

from architectures.ops import catalog

catalog.load_all()
B, T, H, D = 1, 4096, 4, 64
# The chunkwise-parallel ops; the block-local ones (fast form "blocked") have O(T^2) Python naive loops.
CASES = [(op, impl) for op in catalog.OPS.list() if catalog.OPS.get(op).fast == "chunk"
         for impl in catalog.OPS.get(op).impls]


@pytest.mark.parametrize("op,impl", CASES, ids=[f"{op}-{impl}" for op, impl in CASES])
def test_op_forward_speed(benchmark, op, impl):
    entry = catalog.OPS.get(op)
    implementation = entry.impls[impl]
    if implementation.missing():
        pytest.skip(f"{impl} needs {', '.join(implementation.missing())}")
    inputs = entry.make_inputs(B, T, H, D, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))

    def run():
        with torch.no_grad():
            return implementation.fn(inputs)

    benchmark.group = f"{op} T={T} B={B} H={H} D={D} fp32 forward"
    benchmark.extra_info.update(source=implementation.source, notes=implementation.notes)
    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape[:3] == (B, T, H)
