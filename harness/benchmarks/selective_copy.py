"""``selective_copy``: the selective copying task of the Mamba paper (arXiv:2312.00752): ``n_tokens`` data tokens
scattered at random positions among noise, then as many markers; at the j-th marker the model outputs the j-th data
token. Accuracy counts the output positions. A cell is (mixer, seq_len, d_model); rows as in
``harness.benchmarks._recall`` (``accuracy`` per lr with ``lr`` and ``best``)."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from ..tasks import selective_copy, split
from . import Cell, register_benchmark
from ._recall import RecallBenchmark, RecallParams


class SelectiveCopyParams(RecallParams):
    n_tokens: PositiveInt = 16  # tokens to copy
    vocab_size: int = Field(default=16, ge=4)  # noise 0, marker V-1, data tokens 1..V-2


@register_benchmark("selective_copy")
class SelectiveCopy(RecallBenchmark):
    Params = SelectiveCopyParams
    description = "selective copying (Mamba paper): copy the data tokens scattered among noise, in order"

    def vocab_size(self, cell: Cell) -> int:
        return self.params.vocab_size

    def make_data(self, cell: Cell):
        p = self.params

        def make(n: int, seed: int):
            return selective_copy(n, cell.seq_len, p.n_tokens, p.vocab_size, seed)

        return split(make, p.train_examples, p.test_examples, 2000 + 2 * cell.seed, 2001 + 2 * cell.seed)
