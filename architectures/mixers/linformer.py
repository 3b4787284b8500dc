"""Linformer (Wang et al. 2020): keys and values are projected along the sequence to ``proj_len`` rows (the paper's k)
by learned matrices E and F, and each query attends to those rows (``ops.linformer``): O(n k d) time, O(n k) memory.

Not causal: every projected row sums over the whole sequence, so the first output already depends on the last
token. The spec lists only the bidirectional mode; causal benchmarks record the cells as skipped.

Lengths. E and F are (max_seq_len x k), one pair per layer shared by the heads (the paper's headwise sharing); a
sequence of length n uses their first n rows, E[:n] and F[:n], as the reference implementation does for inputs
shorter than its maximum (fairseq slices ``compress_k.weight[:, :n]``). ``max_seq_len`` defaults to 32768, the longest
length of the long-context suite's CUDA profile, so one default serves both profiles; longer inputs raise. The rows
are stored in blocks of 256 (a ``ParameterList``), so that a length-n forward reads, and its backward allocates
gradients for, only the ceil(n / 256) blocks it uses: the training step's memory stays O(n k) instead of carrying a
constant (max_seq_len x k) gradient. Parameters are built outside the measured region, so E and F themselves never
count as activation memory.

Initialisation: E, F ~ N(0, 1/k), the random projections of the paper's Theorem 2 (delta = 1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..mixer import Mixer
from ..ops.linformer import linformer_attention, naive_linformer_attention
from ..registry import register_mixer
from ..spec import MixerSpec, Paper

ROWS_PER_BLOCK = 256


@register_mixer("linformer", spec=MixerSpec(
    family="low-rank attention",
    paper=Paper("Linformer: Self-Attention with Linear Complexity", "2006.04768", 2020),
    claimed_time="O(nkd)", claimed_memory="O(nk)",
    time_exponent=1, memory_exponent=1, state_exponent=None,
    claimed_quality="~96%",
    modes=frozenset({"bidirectional"}),
    impls=("torch",),
    positions="absolute",
    default_hparams={"proj_len": 256, "max_seq_len": 32768},
    test_hparams={"proj_len": 16, "max_seq_len": 64},
    notes="Bidirectional only (the projections along the sequence mix the future into every row). proj_len is the "
          "paper's k; a length-n input uses the first n rows of the (max_seq_len x k) projections E, F, shared by "
          "the heads.",
))
class Linformer(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 proj_len: int = 256, max_seq_len: int = 32768):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if proj_len < 1 or max_seq_len < 1:
            raise ValueError(f"proj_len and max_seq_len must be >= 1, got {proj_len}, {max_seq_len}")
        self.proj_len, self.max_seq_len = proj_len, max_seq_len
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        sizes = [min(ROWS_PER_BLOCK, max_seq_len - i) for i in range(0, max_seq_len, ROWS_PER_BLOCK)]
        std = 1.0 / math.sqrt(proj_len)
        self.e_blocks = nn.ParameterList(nn.Parameter(torch.randn(s, proj_len) * std) for s in sizes)
        self.f_blocks = nn.ParameterList(nn.Parameter(torch.randn(s, proj_len) * std) for s in sizes)

    def projections(self, n: int, fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """E[:n], F[:n], each (n, k), built from the blocks that cover the first n rows."""
        if n > self.max_seq_len:
            raise ValueError(f"linformer: sequence length {n} exceeds max_seq_len={self.max_seq_len}")
        used = -(-n // ROWS_PER_BLOCK)
        # Indexed one by one (a slice of a ParameterList would re-wrap the tensors as new leaf Parameters, cutting
        # the graph under torch.func.functional_call, which the fp64 gradcheck of tests/test_fidelity.py uses).
        e = torch.cat([self.e_blocks[i] for i in range(used)])[:n]  # (n, k)
        f = torch.cat([self.f_blocks[i] for i in range(used)])[:n]
        return (e.float(), f.float()) if fp32 else (e, f)

    def _qkv(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> q, k, v, each (B, T, H, Dh)."""
        return self.project_heads(x, self.wq, self.wk, self.wv, fp32=fp32)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(linformer_attention(*self._qkv(x), *self.projections(x.shape[1])))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        o = naive_linformer_attention(*self._qkv(x, fp32=True), *self.projections(x.shape[1], fp32=True))
        return self._out(o, fp32=True)
