"""Shared plumbing of the optimisation benchmarks (kv_cache, quantization, speculative, checkpointing, precision,
components): a seeded tiny byte-level LM trained on the embedded corpus (cached per process, so that the cells of
one entry share one trained model), timing rows in the harness's format, and storage bytes measured from tensors.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from torch import nn

from architectures.backbone import DecoderLM, LMConfig

from ..corpora import CorpusSpec, causal_batches, head_bytes, load_corpus, resolved_spec
from ..device import time_callable
from ..lm import causal_bits_per_byte
from ..training import TrainConfig, train
from . import RunContext, metric


class TinyLMTraining(BaseModel):
    """How a tiny LM of an optimisation benchmark is trained and scored (the same for every variant compared)."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    corpus: CorpusSpec = Field(default_factory=CorpusSpec)  # default: pydoc_data (offline)
    seq_len: PositiveInt = 128  # training context L
    batch: PositiveInt = 16
    steps: PositiveInt = 300  # token budget = steps x batch x seq_len
    lr: PositiveFloat = 3e-3
    warmup_steps: int = Field(default=30, ge=0)
    eval_bytes: PositiveInt = 16384  # validation bits-per-byte on the first eval_bytes of the validation split


_TRAINED: dict[str, tuple[dict, dict]] = {}  # key -> (state_dict, info): one training per process and config


def train_tiny_lm(cfg: LMConfig, p: TinyLMTraining, seed: int, ctx: RunContext,
                  wrap: Callable[[nn.Module], nn.Module] | None = None) -> tuple[DecoderLM, dict[str, Any]]:
    """A DecoderLM of ``cfg`` trained with ``p`` from ``seed`` (fp32 unless ``wrap`` changes the forward), and
    {val_bpb, train_seconds, train_tokens, final_train_loss, params}. Trained once per process per key."""
    key = json.dumps([cfg.to_dict(), p.model_dump(mode="json"), seed, str(ctx.device),
                      None if wrap is None else getattr(wrap, "__name__", repr(wrap))], sort_keys=True, default=str)
    if key not in _TRAINED:
        corpus = load_corpus(resolved_spec(p.corpus, ctx.suite_dir))
        torch.manual_seed(seed)
        model = DecoderLM(cfg).to(ctx.device)
        trained: nn.Module = wrap(model) if wrap else model
        result = train(trained, causal_batches(corpus.train, p.seq_len, p.batch, seed, ctx.device),
                       TrainConfig(steps=p.steps, lr=p.lr, warmup_steps=p.warmup_steps, eval_every=0, seed=seed))
        val = head_bytes(corpus.val, p.eval_bytes)
        score = causal_bits_per_byte(trained, val, p.seq_len, device=ctx.device)
        info = {"val_bpb": score["val_bpb"], "train_seconds": result.seconds, "train_tokens": result.tokens,
                "final_train_loss": sum(c["train_loss"] for c in result.curve[-10:]) / min(10, len(result.curve)),
                "params": model.num_params()}
        _TRAINED[key] = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, info)
    state, info = _TRAINED[key]
    model = DecoderLM(cfg)
    model.load_state_dict(state)
    return model.to(ctx.device).eval(), dict(info)


def validation_text(p: TinyLMTraining, ctx: RunContext, n_bytes: int | None = None) -> bytes:
    corpus = load_corpus(resolved_spec(p.corpus, ctx.suite_dir))
    return head_bytes(corpus.val, n_bytes or p.eval_bytes)


def timed(fn: Callable[[], object], ctx: RunContext, name: str = "time_s", **extra: Any) -> tuple[float, dict]:
    """Median seconds of one call of ``fn`` (the suite's timing settings) and its row (quartiles beside it)."""
    t = ctx.timing
    timing = time_callable(fn, ctx.device, warmup=t.warmup, min_run_time=t.min_run_time_s,
                           min_repeats=t.min_repeats, max_time=t.max_time_s)
    return timing.median_s, metric(name, timing.median_s, "s", q1_s=timing.q1_s, q3_s=timing.q3_s,
                                   iqr_s=timing.iqr_s, repeats=timing.repeats,
                                   number_per_run=timing.number_per_run, timer=timing.timer, **extra)


def storage_bytes(t: torch.Tensor) -> int:
    """Bytes of the storages that hold a tensor's data. A tensor subclass that wraps others (a quantized weight:
    int8 / packed int4 data, scales, shifts) is walked through ``__tensor_flatten__`` down to plain tensors, so the
    figure is what the weight really occupies, whatever it claims to be."""
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(storage_bytes(getattr(t, name)) for name in names)
    return t.untyped_storage().nbytes()


def storage_dtypes(t: torch.Tensor) -> list[str]:
    """The dtypes of the plain tensors that hold a (possibly quantized) tensor's data."""
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return [d for name in names for d in storage_dtypes(getattr(t, name))]
    return [str(t.dtype).removeprefix("torch.")]


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of a model, from their storages (shared storages counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = id(t)
        if key not in seen:
            seen.add(key)
            total += storage_bytes(t)
    return total


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights of the model's nn.Linear layers (what weight-only quantization compresses)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


# ---- report helpers (each kind's ``report_section`` uses them) -----------------------------------------------------

def md(df, floatfmt: str = ".3g") -> str:
    """A markdown table (pandas + tabulate)."""
    if df is None or df.empty:
        return "_(no rows)_\n"
    return df.to_markdown(index=False, floatfmt=floatfmt) + "\n"


def ok_rows(run, entry) -> "pd.DataFrame":
    """The entry's rows with status ok (empty frame if none)."""
    import pandas as pd

    rows = run.rows(entry.label)
    if rows is None or rows.empty:
        return pd.DataFrame(columns=["metric", "value", "status"])
    return rows[rows["status"] == "ok"]


def failed_lines(run, entry) -> list[str]:
    """Cells of the entry that did not measure, with their status and message."""
    rows = run.rows(entry.label)
    if rows is None or rows.empty:
        return ["_(no cells ran)_", ""]
    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return []
    cols = [c for c in ("mixer", "mode", "seq_len", "dtype", "status", "error") if c in bad]
    return ["Cells that did not measure:", "", md(bad[cols].drop_duplicates()), ""]


def header(entry, kind: str) -> list[str]:
    lines = [f"## Benchmark `{entry.label}` ({kind})", ""]
    if getattr(entry, "description", ""):
        lines += [entry.description.strip(), ""]
    return lines


def save_plot(fig, run, name: str) -> str:
    """Save a matplotlib figure under run.out/plots and return the markdown image line."""
    import matplotlib.pyplot as plt

    path = run.out / "plots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"![{name}](plots/{path.name})"


def column(df, name: str, default=None):
    """A column of the rows, or a constant where the rows lack it (extra keys are only in some rows)."""
    return df[name] if name in df else default
