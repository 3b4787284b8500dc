"""``components``: the guide's building-block choices, side by side.

Modes:
- ``norm``: RMSNorm against LayerNorm (the guide: "RMSNorm ... 10-15% faster"), forward + backward time on a
  (batch, n, d_model) input, per sweep length. Variants: ``rmsnorm`` (the backbone's, written in PyTorch ops as
  LLaMA's), ``rmsnorm_torch`` (``torch.nn.RMSNorm``, PyTorch's own module), ``layernorm`` (``torch.nn.LayerNorm``,
  one fused aten kernel forward and backward); ``speedup`` =
  t_layernorm / t_variant.
- ``ffn``: SwiGLU against the GELU MLP of the backbone at (about) equal parameters (SwiGLU's hidden width is 2/3 of
  GELU's), forward + backward time; ``params`` per variant.
- ``positions``: one cell per variant of ``position_variants``: sinusoidal or learned absolute positions (standard
  attention without RoPE), RoPE (standard), ALiBi (the ``alibi`` mixer), and ``rope_gelu`` (RoPE with the GELU MLP:
  SwiGLU vs GELU in quality). Each is trained at length L (``training.seq_len``) and evaluated on windows of
  ``max(eval_multiples) x L`` bytes of the validation split: ``bpb_bucket`` (bits per byte over the positions
  (m/2 L, m L] for m in ``eval_multiples``, [0, L) for m = 1) and ``bpb_by_position`` (bins of L/4) for the plot,
  as fla's length-extrapolation evaluations do; ``extrapolation_gap`` = bpb over (4L, 8L] (the last bucket) minus
  bpb over (L/2, L] (the end of the training length, where the context is nearly full): how much worse the model
  gets past the length it was trained at; and ``val_bpb`` at the training length.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from architectures.backbone import DecoderLM, LMConfig, RMSNorm, make_ffn

from ..config import ResolvedMixer
from ..corpora import as_tensor
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from ._optim import (TinyLMTraining, failed_lines, header, md, ok_rows, save_plot, timed, train_tiny_lm,
                     validation_text)

# variant -> (mixer, mixer hparams, backbone pos_emb, ffn)
POSITION_VARIANTS: dict[str, tuple[str, dict, str, str]] = {
    "sinusoidal": ("standard", {"rope_theta": None}, "sinusoidal", "swiglu"),
    "learned": ("standard", {"rope_theta": None}, "learned", "swiglu"),
    "rope": ("standard", {}, "none", "swiglu"),
    "alibi": ("alibi", {}, "none", "swiglu"),
    "rope_gelu": ("standard", {}, "none", "gelu"),
}


class ComponentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    training: TinyLMTraining = Field(default_factory=TinyLMTraining)
    n_layers: PositiveInt = 2  # positions: the trained models' size (the sweep's d_model is the norm / ffn width)
    d_model: PositiveInt = 128
    n_heads: PositiveInt = 4
    position_variants: list[str] = Field(default=list(POSITION_VARIANTS), min_length=1)
    eval_multiples: list[PositiveInt] = Field(default=[1, 2, 4, 8], min_length=1)
    eval_windows: PositiveInt = 8  # windows of max(eval_multiples) x L bytes from the validation split

    @field_validator("position_variants")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(POSITION_VARIANTS))
        if unknown:
            raise ValueError(f"unknown position variants {unknown}; expected some of {list(POSITION_VARIANTS)}")
        return v


def norm_variants(d: int) -> dict[str, torch.nn.Module]:
    return {"rmsnorm": RMSNorm(d), "rmsnorm_torch": torch.nn.RMSNorm(d, eps=1e-6), "layernorm": torch.nn.LayerNorm(d)}


def ffn_variants(d: int) -> dict[str, torch.nn.Module]:
    return {"swiglu": make_ffn("swiglu", d, 4.0), "gelu": make_ffn("gelu", d, 4.0)}


def position_config(variant: str, d_model: int, n_heads: int, n_layers: int, max_positions: int) -> LMConfig:
    mixer, hparams, pos_emb, ffn = POSITION_VARIANTS[variant]
    return LMConfig(mixer=mixer, mixer_hparams=dict(hparams), d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    pos_emb=pos_emb, ffn=ffn, max_positions=max_positions)


@torch.no_grad()
def nll_by_position(model: DecoderLM, text: bytes, length: int, windows: int, device) -> torch.Tensor:
    """(length,) mean next-byte loss (nats) at each position of non-overlapping windows of ``length + 1`` bytes."""
    data = as_tensor(text).long()
    n = min(windows, (len(data) - 1) // length)
    if n < 1:
        raise ValueError(f"the validation text ({len(data)} bytes) is shorter than one window of {length + 1}")
    w = torch.stack([data[i * length:i * length + length + 1] for i in range(n)]).to(device)  # (n, length + 1)
    logits = model(w[:, :-1]).float()  # (n, length, V)
    nll = F.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none")  # (n, length)
    return nll.mean(0).cpu()


@register_benchmark("components")
class Components(Benchmark):
    modes = ("norm", "ffn", "positions")
    Params = ComponentsParams
    description = "RMSNorm vs LayerNorm, SwiGLU vs GELU (time), position encodings trained at L, evaluated to 8L"

    def cells(self, mixers: list[ResolvedMixer]) -> Iterator[Cell]:
        sweep = self.entry.sweep_for(self.device.type)
        p = self.params
        for mode in self.entry.modes:
            if mode == "positions":
                for variant in p.position_variants:
                    mixer, hparams, _, _ = POSITION_VARIANTS[variant]
                    yield Cell(self.entry.label, self.name, variant, mixer, "torch", mode, p.training.seq_len,
                               p.training.batch, p.d_model, p.n_heads, "float32", self.suite.seed, dict(hparams))
                continue
            for b, d, dt in itertools.product(sweep.batch, sweep.d_model, sweep.dtype):
                for n in sorted(sweep.seq_len):
                    yield Cell(self.entry.label, self.name, mode, "-", "torch", mode, n, b, d, 1, dt, self.suite.seed)

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        if cell.mode == "positions":
            return self._positions(cell, ctx)
        dtype = getattr(torch, cell.dtype)
        modules = norm_variants(cell.d_model) if cell.mode == "norm" else ffn_variants(cell.d_model)
        gen = torch.Generator().manual_seed(cell.seed)
        x = torch.randn(cell.batch, cell.seq_len, cell.d_model, generator=gen).to(ctx.device, dtype)
        rows, times = [], {}
        for name, module in modules.items():
            module = module.to(ctx.device, dtype)
            xi = x.clone().requires_grad_(True)

            def fwd_bwd(module=module, xi=xi):
                module.zero_grad(set_to_none=True)
                xi.grad = None
                module(xi).sum().backward()

            times[name], row = timed(fwd_bwd, ctx, variant=name)
            rows += [row, metric("params", sum(p.numel() for p in module.parameters()), "count", variant=name)]
        ref = "layernorm" if cell.mode == "norm" else "gelu"
        rows += [metric("speedup", times[ref] / t, "x", variant=name, against=ref) for name, t in times.items()]
        return rows

    def _positions(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        p = self.params
        L, top = p.training.seq_len, max(p.eval_multiples)
        if cell.seq_len != L:
            raise SkipCell(f"positions cells train at training.seq_len={L}")
        cfg = position_config(cell.mixer, cell.d_model, cell.n_heads, p.n_layers, max_positions=top * L)
        model, info = train_tiny_lm(cfg, p.training, cell.seed, ctx)
        text = validation_text(p.training, ctx, p.eval_windows * (top * L + 1) + 1)
        nll = nll_by_position(model, text, top * L, p.eval_windows, ctx.device) / torch.log(torch.tensor(2.0))
        rows = [metric("val_bpb", info["val_bpb"], "bits/byte", variant=cell.mixer),
                metric("params", info["params"], "count", variant=cell.mixer)]
        for m in sorted(p.eval_multiples):
            lo = 0 if m == 1 else (m // 2) * L
            rows.append(metric("bpb_bucket", float(nll[lo:m * L].mean()), "bits/byte", variant=cell.mixer,
                               multiple=m, position_lo=lo, position_hi=m * L))
        inside = float(nll[L // 2:L].mean())
        rows += [metric("bpb_end_of_training_length", inside, "bits/byte", variant=cell.mixer),
                 metric("extrapolation_gap", float(nll[(top // 2) * L:top * L].mean()) - inside, "bits/byte",
                        variant=cell.mixer, multiple=top)]
        step = max(1, L // 4)
        for lo in range(0, top * L, step):
            rows.append(metric("bpb_by_position", float(nll[lo:lo + step].mean()), "bits/byte", variant=cell.mixer,
                               position_lo=lo, position_hi=lo + step))
        return rows

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """Timing tables of norms and MLPs; bits per byte by position bucket per encoding, with its plot."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = header(entry, "components") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        for mode, what in (("norm", "RMSNorm vs LayerNorm"), ("ffn", "SwiGLU vs GELU MLP")):
            r = rows[(rows["mode"] == mode) & rows["metric"].isin(["time_s", "speedup", "params"])]
            if r.empty:
                continue
            wide = r.pivot_table(index=["seq_len", "batch", "d_model", "dtype", "variant"], columns="metric",
                                 values="value", aggfunc="first").reset_index()
            if "time_s" in wide:
                wide["time_s"] = wide["time_s"] * 1e3
                wide = wide.rename(columns={"time_s": "fwd+bwd ms"})
            lines += [f"### {what}", "", f"Forward + backward (median); `speedup` = t_"
                      f"{'layernorm' if mode == 'norm' else 'gelu'} / t_variant.", "", md(wide, ".4g"), ""]
        pos = rows[rows["mode"] == "positions"]
        if pos.empty:
            return lines
        buckets = pos[pos["metric"] == "bpb_bucket"].pivot_table(index="variant", columns="multiple",
                                                                  values="value", aggfunc="first")
        buckets.columns = [f"bpb ≤{int(m)}L" for m in buckets.columns]
        for m, name in (("val_bpb", "val_bpb (at L)"), ("bpb_end_of_training_length", "bpb (L/2, L]"),
                        ("extrapolation_gap", "gap: last bucket - (L/2, L]")):
            buckets[name] = pos[pos["metric"] == m].set_index("variant")["value"]
        L = int(pos["seq_len"].iloc[0])
        lines += ["### Position encodings: trained at L, evaluated to 8L", "",
                  f"L = {L}. Bits per byte over the positions of each bucket ((m/2 L, m L]; the first is [0, L)) of "
                  "windows that start at position 0; `val_bpb (at L)` is the usual evaluation at the training "
                  "length; the gap is how much worse the last bucket is than the end of the training length (the "
                  "degradation past L, apart from how well each model learnt within L). `rope_gelu` is RoPE with the "
                  "GELU MLP (the SwiGLU vs GELU quality comparison).", "",
                  md(buckets.reset_index(), ".4g"), ""]
        fig, ax = plt.subplots(figsize=(7, 4))
        curve = pos[pos["metric"] == "bpb_by_position"]
        for variant, g in curve.groupby("variant"):
            g = g.sort_values("position_lo")
            ax.plot((g["position_lo"] + g["position_hi"]) / 2, g["value"], label=variant)
        ax.axvline(L, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="position", ylabel="bits per byte", title=f"{entry.label}: loss by position (trained at {L})",
               xscale="log")
        ax.legend(fontsize=8)
        return lines + [save_plot(fig, run, f"{entry.label}-positions"), ""]
