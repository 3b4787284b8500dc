"""``speculative``: speculative decoding (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023,
arXiv:2302.01318) with a small draft and a larger target ``DecoderLM`` trained on the embedded corpus (the same byte
vocabulary). The guide: "Small draft model proposes tokens, large model verifies in parallel. 2-3x speedup!"

Per round the draft proposes k tokens one step at a time; the target scores the pending token and the k proposals
in one ``extend`` call (k + 1 positions against its KV cache) and keeps the longest accepted prefix:
- ``greedy``: proposal x_i is accepted while it equals the target's argmax at its position; the first mismatch is
  replaced by the target's argmax (or, all accepted, the target's next argmax is added). The output is the target's
  own greedy decoding, token for token.
- ``sampled`` (temperature ``temperature``): x_i ~ q_i is accepted with probability min(1, p_i(x_i) / q_i(x_i));
  at the first rejection a token is drawn from norm(max(0, p_i - q_i)); all accepted, one more from p_{k+1}. The
  output is distributed exactly as the target's own sampling.
Rejected proposals are rolled back by truncating both KV caches (``DecoderLM.truncate``).

A cell is one mode; it trains (once per process) the draft (``draft``: d_model, n_layers) and the target (the cell's
d_model, ``target_layers``), then for every k in ``draft_lengths`` generates ``new_tokens`` tokens after a
``prompt_len``-byte prompt from the validation split and times it against the target alone (cached decoding).
Rows per k (``draft_len``): ``acceptance_rate`` (accepted / proposed), ``tokens_per_round``, ``time_s``,
``tokens_per_s``, ``speedup`` (target-only time / speculative time) and, greedy, ``matches_target`` (1.0 when the
output equals the target's greedy decoding); ``draft_len = 0`` rows are the target alone; the models' val_bpb and
parameter counts, and the draft's and target's time per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from architectures.backbone import DecoderLM, LMConfig

from ..corpora import as_tensor
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from ._optim import TinyLMTraining, failed_lines, header, md, ok_rows, save_plot, timed, train_tiny_lm, validation_text


class DraftModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    d_model: PositiveInt = 64
    n_heads: PositiveInt = 2
    n_layers: PositiveInt = 1


class SpeculativeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    training: TinyLMTraining = Field(default_factory=TinyLMTraining)
    draft: DraftModel = Field(default_factory=DraftModel)
    target_layers: PositiveInt = 4
    draft_lengths: list[PositiveInt] = Field(default=[1, 2, 4, 8], min_length=1)
    prompt_len: PositiveInt = 64
    new_tokens: PositiveInt = 128
    temperature: PositiveFloat = 1.0


@dataclass
class SpecStats:
    tokens: list[int]
    proposed: int = 0
    accepted: int = 0
    rounds: int = 0


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1)


def _choose(logits: torch.Tensor, greedy: bool, temperature: float, gen: torch.Generator | None) -> int:
    if greedy:
        return int(logits.argmax())
    return int(torch.multinomial(_probs(logits, temperature).cpu(), 1, generator=gen))


def _prime(model: DecoderLM, prompt: torch.Tensor) -> dict:
    """The state after all but the prompt's last token (which stays pending)."""
    return model.extend(prompt[None, :-1], model.init_state(1))[1]


@torch.no_grad()
def target_generate(target: DecoderLM, prompt: torch.Tensor, n_new: int, greedy: bool = True,
                    temperature: float = 1.0, gen: torch.Generator | None = None) -> list[int]:
    """The target alone, one cached step per token (the reference output and the baseline speed)."""
    state, last, out = _prime(target, prompt), int(prompt[-1]), []
    while len(out) < n_new:
        logits, state = target.step(torch.tensor([last], device=prompt.device), state)
        last = _choose(logits[0], greedy, temperature, gen)
        out.append(last)
    return out


@torch.no_grad()
def speculative_generate(target: DecoderLM, draft: DecoderLM, prompt: torch.Tensor, n_new: int, k: int,
                         greedy: bool = True, temperature: float = 1.0,
                         gen: torch.Generator | None = None) -> SpecStats:
    """``n_new`` tokens after ``prompt`` (1-D) by speculative decoding with draft length ``k`` (module docstring)."""
    dev = prompt.device
    t_state, d_state = _prime(target, prompt), _prime(draft, prompt)
    pending_t, pending_d = int(prompt[-1]), [int(prompt[-1])]  # fed to neither model yet
    stats = SpecStats(tokens=[])
    while len(stats.tokens) < n_new:
        for tok in pending_d:  # bring the draft up to date; its last logits propose the first token
            d_logits, d_state = draft.step(torch.tensor([tok], device=dev), d_state)
        base = t_state["pos"]  # committed tokens in the target's cache
        proposal, q = [], []
        for i in range(k):
            q.append(_probs(d_logits[0], temperature))
            proposal.append(_choose(d_logits[0], greedy, temperature, gen))
            if i < k - 1:
                d_logits, d_state = draft.step(torch.tensor([proposal[-1]], device=dev), d_state)
        t_logits, t_state = target.extend(torch.tensor([[pending_t] + proposal], device=dev), t_state)  # (1,k+1,V)
        n, nxt = 0, None
        for i, x in enumerate(proposal):
            if greedy:
                ok = int(t_logits[0, i].argmax()) == x
            else:
                p = _probs(t_logits[0, i], temperature)
                ok = float(torch.rand((), generator=gen)) < min(1.0, float(p[x] / q[i][x]))
            if not ok:
                if greedy:
                    nxt = int(t_logits[0, i].argmax())
                else:
                    residual = (_probs(t_logits[0, i], temperature) - q[i]).clamp_min(0)
                    nxt = int(torch.multinomial(residual.cpu() / residual.sum().cpu(), 1, generator=gen))
                break
            n += 1
        if nxt is None:  # every proposal accepted: the target's distribution after the last one gives one more
            nxt = _choose(t_logits[0, k], greedy, temperature, gen)
        stats.proposed, stats.accepted, stats.rounds = stats.proposed + k, stats.accepted + n, stats.rounds + 1
        stats.tokens += proposal[:n] + [nxt]
        t_state = target.truncate(t_state, base + 1 + n)  # pending + accepted proposals
        d_state = draft.truncate(d_state, base + 1 + min(n, k - 1))  # the draft fed pending + x_1..x_{k-1}
        pending_t = nxt
        pending_d = ([proposal[-1]] if n == k else []) + [nxt]
    stats.tokens = stats.tokens[:n_new]
    return stats


@register_benchmark("speculative")
class Speculative(Benchmark):
    modes = ("greedy", "sampled")
    Params = SpeculativeParams
    description = "speculative decoding: draft + target, acceptance per draft length, speed-up over the target"

    def models(self, cell: Cell, ctx: RunContext) -> tuple[DecoderLM, DecoderLM, dict, dict]:
        p = self.params
        common = dict(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl)
        target_cfg = LMConfig(**common, d_model=cell.d_model, n_heads=cell.n_heads, n_layers=p.target_layers)
        draft_cfg = LMConfig(**common, **p.draft.model_dump())
        target, t_info = train_tiny_lm(target_cfg, p.training, cell.seed, ctx)
        draft, d_info = train_tiny_lm(draft_cfg, p.training, cell.seed, ctx)
        return target, draft, t_info, d_info

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        if cell.mixer_name not in ("standard", "alibi"):
            raise SkipCell(f"speculative decoding needs a mixer with `extend` and `truncate` (standard, alibi), "
                           f"not {cell.mixer_name}")
        p = self.params
        greedy = cell.mode == "greedy"
        target, draft, t_info, d_info = self.models(cell, ctx)
        prompt = as_tensor(validation_text(p.training, ctx, p.prompt_len)).long().to(ctx.device)
        rows = [metric("val_bpb", t_info["val_bpb"], "bits/byte", model="target"),
                metric("val_bpb", d_info["val_bpb"], "bits/byte", model="draft"),
                metric("params", t_info["params"], "count", model="target"),
                metric("params", d_info["params"], "count", model="draft")]
        ref = target_generate(target, prompt, p.new_tokens, greedy=True)

        def run(k: int):
            gen = torch.Generator().manual_seed(cell.seed)
            if k == 0:
                return target_generate(target, prompt, p.new_tokens, greedy, p.temperature, gen)
            return speculative_generate(target, draft, prompt, p.new_tokens, k, greedy, p.temperature, gen)

        t_target, row = timed(lambda: run(0), ctx, draft_len=0)
        rows += [row, metric("tokens_per_s", p.new_tokens / t_target, "tok/s", draft_len=0)]
        for k in p.draft_lengths:
            stats = run(k)
            t, row = timed(lambda: run(k), ctx, draft_len=k)
            rows += [row, metric("tokens_per_s", p.new_tokens / t, "tok/s", draft_len=k),
                     metric("speedup", t_target / t, "x", draft_len=k),
                     metric("acceptance_rate", stats.accepted / stats.proposed, "ratio", draft_len=k),
                     metric("tokens_per_round", len(stats.tokens) / stats.rounds, "tokens", draft_len=k)]
            if greedy:
                rows.append(metric("matches_target", float(stats.tokens == ref), "bool", draft_len=k))
        return rows

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """Acceptance and speed-up per draft length k (table and plot)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = header(entry, "speculative") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        models = rows[rows["metric"].isin(["val_bpb", "params"])].pivot_table(
            index="model", columns="metric", values="value", aggfunc="first").reset_index()
        lines += ["Models (trained on the same corpus and budget):", "", md(models, ".4g"), ""]
        per_k = rows[rows["draft_len"].notna()] if "draft_len" in rows else rows.iloc[0:0]
        wide = per_k.pivot_table(index=["mode", "draft_len"], columns="metric", values="value",
                                 aggfunc="first").reset_index()
        lines += ["`draft_len` 0 is the target alone (cached greedy or sampled decoding); `speedup` = its time / "
                  "the speculative time for the same number of new tokens; `matches_target` = 1 when the greedy "
                  "output equals the target's own greedy decoding token for token.", "", md(wide, ".3g"), ""]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for mode, grp in per_k[per_k["draft_len"] > 0].groupby("mode"):
            for ax, m in zip(axes, ("acceptance_rate", "speedup")):
                g = grp[grp["metric"] == m].sort_values("draft_len")
                ax.plot(g["draft_len"], g["value"], marker="o", label=mode)
                ax.set(xlabel="draft length k", ylabel=m, xscale="log", title=m)
        axes[1].axhline(1.0, color="grey", lw=0.8, ls="--")
        for ax in axes:
            ax.legend(fontsize=8)
        return lines + [save_plot(fig, run, f"{entry.label}-acceptance"), ""]
