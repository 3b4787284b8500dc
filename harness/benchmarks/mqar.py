"""``mqar``: multi-query associative recall (Zoology, arXiv:2312.04927), accuracy against length, number of
key-value pairs, model width and decode-state size.

A cell is (mixer, seq_len, n_pairs, d_model): a 2-layer ``DecoderLM`` is trained on a fixed MQAR training set once
per learning rate of ``params.lrs`` (stopping early at 99% test accuracy) and evaluated on a disjoint test set.
``n_pairs`` is a grid crossed with the sweep's lengths (``[4, 8, 16]``), or a mapping from length to the pair counts
at that length (Zoology's Figure 2 ties them: ``{64: [4], 128: [8], 256: [16], 512: [64]}``); combinations that do
not fit (4 * n_pairs > seq_len) are left out. Rows: see ``harness.benchmarks._recall`` (``accuracy`` per lr with
``lr`` and ``best``; ``state_bytes`` per cell), each with the cell's ``n_pairs``.

The report plots the best accuracy against decode-state bytes (Zoology's figure) and against length.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

from pydantic import Field, PositiveInt

from ..config import ResolvedMixer
from ..tasks import split
from ..tasks.mqar import check_mqar_shape, mqar
from . import Cell, register_benchmark
from ._recall import RecallBenchmark, RecallParams


@dataclass(frozen=True)
class MQARCell(Cell):
    n_pairs: int = 0

    @property
    def cell_id(self) -> str:
        return f"{super().cell_id}/kv={self.n_pairs}"

    @property
    def series(self) -> tuple:
        return (*super().series, self.n_pairs)


class MQARParams(RecallParams):
    vocab_size: PositiveInt = 8192  # Zoology's; keys from [1, V/2), values from [V/2, V)
    n_pairs: list[PositiveInt] | dict[int, list[PositiveInt]] = Field(default=[4, 8, 16])
    power_a: float = Field(default=0.01, gt=0, le=1)  # query-gap power law (1.0 = uniform)
    random_non_queries: bool = True  # filler: random tokens (Zoology's default) or token 0


@register_benchmark("mqar")
class MQAR(RecallBenchmark):
    Params = MQARParams
    description = "multi-query associative recall (Zoology): accuracy vs length, pairs, d_model and state bytes"
    report_keys = ["seq_len", "n_pairs", "d_model"]

    @classmethod
    def report_plots(cls, run, entry) -> list:
        """Zoology's figure (accuracy against the decode-state bytes of one layer) and accuracy against length."""
        from ..analysis import ok_metric
        from ._recall_report import AccuracyPlot, best_accuracy

        rows = run.rows(entry.label)
        best = best_accuracy(rows)
        if best.empty:
            return []
        state = ok_metric(rows, "state_bytes")[["cell_id", "value"]].rename(columns={"value": "state_bytes"})
        return [AccuracyPlot(best.merge(state, on="cell_id"), "state_bytes", ["seq_len", "n_pairs"], "state",
                             f"{entry.label}: accuracy vs decode-state bytes of one layer (Zoology's figure)"),
                AccuracyPlot(best, "seq_len", ["d_model"], "length", f"{entry.label}: accuracy vs sequence length")]

    def pairs_for(self, seq_len: int) -> list[int]:
        spec = self.params.n_pairs
        pairs = spec.get(seq_len, []) if isinstance(spec, dict) else spec
        return [p for p in pairs if 4 * p <= seq_len]

    def grid(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        sweep = self.entry.sweep_for(self.device.type)
        for m in self.entry.select(mixers):
            for mode, b, d, h, dt in itertools.product(self.entry.modes, sweep.batch, sweep.d_model, sweep.n_heads,
                                                       sweep.dtype):
                for n in sorted(sweep.seq_len):
                    for p in self.pairs_for(n):
                        yield MQARCell(self.entry.label, self.name, m.label, m.name, m.impl, mode, n, b, d, h, dt,
                                       self.suite.seed, dict(m.hparams), m.missing, n_pairs=p)

    def vocab_size(self, cell: Cell) -> int:
        return self.params.vocab_size

    def data_key(self, cell: MQARCell) -> tuple:
        return (cell.seq_len, cell.n_pairs, cell.seed)

    def make_data(self, cell: MQARCell):
        p = self.params
        check_mqar_shape(cell.seq_len, cell.n_pairs, p.vocab_size)

        def make(n: int, seed: int):
            return mqar(n, cell.seq_len, cell.n_pairs, p.vocab_size, seed, power_a=p.power_a,
                        random_non_queries=p.random_non_queries)

        # Train and test from different seeds, derived from the suite's seed; split() removes any overlap.
        return split(make, p.train_examples, p.test_examples, 1000 + 2 * cell.seed, 1001 + 2 * cell.seed)
