"""``kv_cache``: what the KV cache buys in decoding, over growing context (the guide: "Avoids recomputation during
autoregressive generation").

A cell is one context length n (the sweep's ``seq_len``) of a ``DecoderLM`` of the cell's mixer (random weights:
speed does not depend on them). The next token's logits are produced two ways, each timed per token:
- ``cached``: one ``step`` of the model with the per-layer state (KV cache) of the n tokens before it;
- ``recompute``: a forward pass over the whole prefix of n + 1 tokens, keeping the last position's logits (the
  guide's ``output = model(input[:i])`` loop).
Rows: ``time_s`` and ``tokens_per_s`` per ``method`` (batch / median time), ``speedup`` = t_recompute / t_cached,
``cache_bytes`` (measured from the returned state) and ``max_abs_diff`` between the two logits (they must agree).
The report draws the speed-up against n and names the shortest n from which the cache is faster at every longer n.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, PositiveInt

import architectures
from architectures.backbone import DecoderLM, LMConfig

from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from ._optim import failed_lines, header, md, ok_rows, save_plot, timed


class KVCacheParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    n_layers: PositiveInt = 2


def state_nbytes(state: Any) -> int:
    """Bytes of every tensor in a (nested) decode state."""
    if isinstance(state, torch.Tensor):
        return state.untyped_storage().nbytes()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


@torch.no_grad()
def state_after(model: DecoderLM, tokens: torch.Tensor) -> dict:
    """The decode state after ``tokens`` (B, n): ``extend`` where the mixers have it, else n steps."""
    state = model.init_state(tokens.shape[0])
    if tokens.shape[1] == 0:
        return state
    if hasattr(model.blocks[0].mixer, "extend"):
        try:
            return model.extend(tokens, state)[1]
        except NotImplementedError:
            pass  # the same state, built token by token below
    for i in range(tokens.shape[1]):
        state = model.step(tokens[:, i], state)[1]
    return state


@register_benchmark("kv_cache")
class KVCache(Benchmark):
    modes = ("decode",)
    Params = KVCacheParams
    description = "decode with the KV cache vs recomputing the prefix per token, over context length"

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        cls = architectures.get_mixer(cell.mixer_name)
        if "decode" not in cls.spec.modes:
            raise SkipCell(f"{cell.mixer_name} has no decode mode")
        dtype = getattr(torch, cell.dtype)
        torch.manual_seed(cell.seed)
        cfg = LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                       d_model=cell.d_model, n_heads=cell.n_heads, n_layers=self.params.n_layers)
        model = DecoderLM(cfg).to(ctx.device, dtype).eval()
        gen = torch.Generator().manual_seed(cell.seed)
        n = cell.seq_len
        tokens = torch.randint(0, 256, (cell.batch, n + 1), generator=gen).to(ctx.device)  # n context + next input
        state = state_after(model, tokens[:, :n])

        def cached():
            with torch.no_grad():
                return model.step(tokens[:, n], state)[0]

        def recompute():
            with torch.no_grad():
                return model(tokens)[:, -1]

        diff = float((cached().float() - recompute().float()).abs().max())
        t_cached, row_c = timed(cached, ctx, method="cached")
        t_full, row_r = timed(recompute, ctx, method="recompute")
        B = cell.batch
        return [row_c, metric("tokens_per_s", B / t_cached, "tok/s", method="cached"),
                row_r, metric("tokens_per_s", B / t_full, "tok/s", method="recompute"),
                metric("speedup", t_full / t_cached, "x"),
                metric("cache_bytes", state_nbytes(state["layers"]), "B"),
                metric("max_abs_diff", diff, "abs")]

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """Per-token time with and without the cache against n, the speed-up curve and where it crosses 1."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = header(entry, "kv_cache") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        keys = ["mixer", "batch", "d_model", "dtype"]
        t = rows[rows["metric"] == "time_s"].pivot_table(index=keys + ["seq_len"], columns="method", values="value")
        t = (t * 1e3).add_suffix(" ms/token").reset_index()
        for m in ("speedup", "cache_bytes", "max_abs_diff"):
            t = t.merge(rows[rows["metric"] == m][keys + ["seq_len", "value"]].rename(columns={"value": m}),
                        on=keys + ["seq_len"], how="left")
        lines += ["Time per generated token (median), with the cache (one `step`) and recomputing the prefix "
                  "(a forward over n + 1 tokens); `speedup` = recompute / cached; `cache_bytes` measured from the "
                  "state; `max_abs_diff`: the two logits agree.", "", md(t, ".4g"), ""]
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, grp in rows[rows["metric"] == "speedup"].groupby(keys):
            grp = grp.sort_values("seq_len")
            ax.plot(grp["seq_len"], grp["value"], marker="o", label=f"{key[0]} b={key[1]} d={key[2]} {key[3]}")
            n0 = crossover(grp)
            lines += [f"- {key[0]} (batch {key[1]}, d_model {key[2]}, {key[3]}): the cache is faster from n = "
                      f"{n0 if n0 is not None else 'never (in the measured range)'} on; speed-up "
                      f"{grp['value'].iloc[0]:.2f}x at n = {int(grp['seq_len'].iloc[0])}, "
                      f"{grp['value'].iloc[-1]:.2f}x at n = {int(grp['seq_len'].iloc[-1])}."]
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set(xscale="log", yscale="log", xlabel="context n (tokens)", ylabel="speed-up (recompute / cached)",
               title=f"{entry.label}: KV cache speed-up per token")
        ax.legend(fontsize=7)
        return lines + ["", save_plot(fig, run, f"{entry.label}-speedup"), ""]


def crossover(speedups: pd.DataFrame) -> int | None:
    """The shortest n from which the speed-up is > 1 at every longer measured n (None: never)."""
    s = speedups.sort_values("seq_len")
    above = (s["value"] > 1).tolist()
    for i in range(len(above)):
        if all(above[i:]):
            return int(s["seq_len"].iloc[i])
    return None
