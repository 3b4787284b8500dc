"""``passkey``: passkey retrieval at growing context length (Mohtashami & Jaggi 2023, arXiv:2305.16300), bytes as
tokens. A cell is (mixer, training length = seq_len, d_model): the model is trained at seq_len and evaluated there
and at every longer length of ``params.eval_lengths``. Rows as in ``harness.benchmarks._recall``, each accuracy row
with ``eval_len`` (the length of the evaluation set); ``accuracy`` counts answer digits, ``example_accuracy`` whole
keys."""
from __future__ import annotations

from pydantic import Field, PositiveInt

from ..tasks import passkey, split
from . import Cell, register_benchmark
from ._recall import RecallBenchmark, RecallParams


class PasskeyParams(RecallParams):
    n_digits: PositiveInt = 5
    eval_lengths: list[PositiveInt] = Field(default=[512, 1024, 2048], min_length=1)  # beyond the training length
    eval_examples: PositiveInt = 200  # per evaluation length


@register_benchmark("passkey")
class Passkey(RecallBenchmark):
    Params = PasskeyParams
    description = "passkey retrieval in filler text: trained at seq_len, accuracy at longer lengths"
    extra_eval_key = "eval_len"
    report_keys = ["seq_len", "d_model", "eval_len"]
    report_note = " For passkey, seq_len is the training length and eval_len the evaluated one."

    @classmethod
    def report_plots(cls, run, entry) -> list:
        from ._recall_report import AccuracyPlot, best_accuracy

        best = best_accuracy(run.rows(entry.label))
        if best.empty:
            return []
        return [AccuracyPlot(best, "eval_len", ["seq_len", "d_model"], "length",
                             f"{entry.label}: accuracy vs evaluated length (dotted: training length)",
                             vline="seq_len")]

    def vocab_size(self, cell: Cell) -> int:
        return 256

    def make_data(self, cell: Cell):
        p = self.params

        def make(n: int, seed: int):
            return passkey(n, cell.seq_len, p.n_digits, seed)

        return split(make, p.train_examples, p.test_examples, 3000 + 2 * cell.seed, 3001 + 2 * cell.seed)

    def main_eval_tag(self, cell: Cell) -> dict:
        return {"eval_len": cell.seq_len}

    def extra_evals(self, cell: Cell) -> dict:
        p = self.params
        lengths = sorted(n for n in set(p.eval_lengths) if n > cell.seq_len)
        # Other seeds again; at a longer length no example can equal a training example.
        return {n: passkey(p.eval_examples, n, p.n_digits, 3500 + 2 * cell.seed + n) for n in lengths}
