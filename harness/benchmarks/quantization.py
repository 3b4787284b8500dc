"""``quantization``: weight-only int8 / int4 and an int8 KV cache on a trained tiny LM (the guide: "FP16 -> INT8 ->
INT4. 4x smaller, ~5% quality loss").

One ``DecoderLM`` of the cell's mixer is trained on the embedded corpus (``_optim.train_tiny_lm``, fp32, once per
process); each cell is one variant (its ``mode``):
- ``fp32``, ``fp16``: the trained weights, cast;
- ``int8``, ``int4``: weight-only quantization of every ``nn.Linear`` by ``optimum-quanto`` (``qint8``: int8 data +
  a per-row scale; ``qint4``: two 4-bit values packed per uint8 byte + per-group (128) scale and shift), frozen, so
  the weights are stored quantized; from the fp16 weights by default (``quantize_from``: scales and activations
  in fp16, the guide's "FP16 -> INT4"). The embedding, tied to the output head, stays fp32 in every variant.
  Why quanto: torchao 0.18's int4 weight-only needs CUDA kernels (``Int4WeightOnlyConfig`` requires ``mslk``), and
  its CPU path (``IntxWeightOnlyConfig``) stores int4 values unpacked in int8 bytes; quanto packs int4 on CPU.
- ``kv_int8``: fp32 weights, the KV cache stored as int8 with one fp16 scale per token and head (absmax), quantized
  once when a token enters the cache and dequantized to attend.
Rows: ``linear_weight_bytes`` (storage of the Linear weights, walked down to plain tensors: data, scales, shifts),
``fp16_linear_weight_bytes`` (the same weights as fp16) and ``compression_vs_fp16``, ``bits_per_weight``,
``model_bytes`` (all parameters and buffers), ``cache_bytes`` at ``context`` tokens, ``prefill_time_s`` (forward over
``context`` tokens) and ``decode_time_s`` (one step at ``context``) with tokens/s, ``val_bpb`` and
``ppl_change_pct`` = 100 x (2^(bpb - bpb_fp32) - 1). The KV-cache variant is scored by decoding token by token over
the first ``kv_eval_bytes`` of the validation split (``val_bpb_decode``), against the same decoding with an fp32
cache; weight variants by the parallel forward over ``eval_bytes``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

import architectures
from architectures.backbone import DecoderLM, LMConfig
from architectures.mixers._kv_attention import KVCacheAttention

from ..corpora import as_tensor
from ..lm import PREFIX_BYTE, causal_bits_per_byte, causal_windows
from . import Benchmark, Cell, RunContext, SkipCell, metric, register_benchmark
from ._optim import (TinyLMTraining, failed_lines, header, linear_weights, md, model_bytes, ok_rows, storage_bytes,
                     storage_dtypes, timed, train_tiny_lm, validation_text)
from .kv_cache import state_after, state_nbytes

VARIANTS = ("fp32", "fp16", "int8", "int4", "kv_int8")


class QuantizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    training: TinyLMTraining = Field(default_factory=TinyLMTraining)
    n_layers: PositiveInt = 2
    context: PositiveInt = 512  # tokens of context for prefill/decode timing and cache bytes
    kv_eval_bytes: PositiveInt = 2048  # validation bytes decoded token by token to score the int8 KV cache
    # the weights int8/int4 are quantized from (and the dtype of their scales and activations): the guide's
    # "FP16 -> INT8 -> INT4" starts from fp16
    quantize_from: Literal["float16", "float32"] = "float16"


# ---- weight-only quantization (optimum-quanto) ---------------------------------------------------------------------

def quantize_weights(model: DecoderLM, bits: int) -> DecoderLM:
    """Weight-only quantization of every nn.Linear (in place), frozen so the weights are stored quantized."""
    try:
        from optimum.quanto import freeze, qint4, qint8, quantize
    except ImportError as err:
        raise SkipCell(f"optimum-quanto is not installed ({err}); pip install optimum-quanto") from None
    quantize(model, weights={8: qint8, 4: qint4}[bits])
    freeze(model)
    return model


# ---- int8 KV cache -------------------------------------------------------------------------------------------------

def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H, Dh) -> int8 values and one fp16 absmax scale per (B, T, H): x ~ q * scale."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-8) / 127.0  # (B, T, H, 1)
    q = torch.round(x.float() / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.float16)


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scale.float()).to(dtype)


def int8_cache(state: dict) -> dict:
    """A DecoderLM state with every layer's K and V stored as int8 + fp16 scales."""
    layers = []
    for s in state["layers"]:
        (kq, ks), (vq, vs) = quantize_int8(s["k"]), quantize_int8(s["v"])
        layers.append({"k_q": kq, "k_s": ks, "v_q": vq, "v_s": vs, "pos": s["pos"]})
    return {"pos": state["pos"], "layers": layers}


@torch.no_grad()
def step_int8_cache(model: DecoderLM, token: torch.Tensor, qstate: dict) -> tuple[torch.Tensor, dict]:
    """``DecoderLM.step`` with the int8 cache: each layer attends to its dequantized cache; the new token's K and V
    are quantized once, when they enter the cache."""
    x = model._embed(token, qstate["pos"])  # (B, D)
    dtype = x.dtype
    layers = []
    for block, qs in zip(model.blocks, qstate["layers"]):
        state = {"k": dequantize_int8(qs["k_q"], qs["k_s"], dtype), "v": dequantize_int8(qs["v_q"], qs["v_s"], dtype),
                 "pos": qs["pos"]}
        x, new = block.step(x, state)
        (kq, ks), (vq, vs) = quantize_int8(new["k"][:, -1:]), quantize_int8(new["v"][:, -1:])  # the new token only
        layers.append({"k_q": torch.cat([qs["k_q"], kq], 1), "k_s": torch.cat([qs["k_s"], ks], 1),
                       "v_q": torch.cat([qs["v_q"], vq], 1), "v_s": torch.cat([qs["v_s"], vs], 1),
                       "pos": new["pos"]})
    return F.linear(model.norm(x), model.embed.weight), {"pos": qstate["pos"] + 1, "layers": layers}


@torch.no_grad()
def decode_bits_per_byte(step: Callable, init: Callable, text: bytes, seq_len: int) -> float:
    """Bits per byte of ``text`` scored token by token with ``step(token, state) -> (logits, state)``, over the
    same windows as ``harness.lm.causal_bits_per_byte`` (so an exact cache gives the same figure)."""
    data = as_tensor(text).long()
    stream = torch.cat([torch.tensor([PREFIX_BYTE]), data])
    total, count = 0.0, 0
    for start, end, first in causal_windows(len(data), seq_len):
        state = init()
        for i in range(start, end):
            logits, state = step(stream[i:i + 1], state)
            if i >= first:
                total += float(F.cross_entropy(logits.float(), data[i:i + 1]))
                count += 1
    return total / count / math.log(2)


# ---- the benchmark -------------------------------------------------------------------------------------------------

@register_benchmark("quantization")
class Quantization(Benchmark):
    modes = VARIANTS
    Params = QuantizationParams
    description = "weight-only int8/int4 (optimum-quanto) and an int8 KV cache: bytes, speed, quality"

    def lm_config(self, cell: Cell) -> LMConfig:
        return LMConfig(mixer=cell.mixer_name, mixer_hparams=dict(cell.hparams), impl=cell.impl,
                        d_model=cell.d_model, n_heads=cell.n_heads, n_layers=self.params.n_layers)

    def run_cell(self, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        if not issubclass(architectures.get_mixer(cell.mixer_name), KVCacheAttention):
            raise SkipCell(f"{cell.mixer_name} has no KV cache (the int8 cache is for KV-cache attention)")
        if cell.dtype != "float32":
            raise SkipCell("the variants set their own dtypes; run this kind with dtype float32")
        p = self.params
        model, info = train_tiny_lm(self.lm_config(cell), p.training, cell.seed, ctx)
        fp16_bytes = sum(w.detach().half().untyped_storage().nbytes() for w in linear_weights(model))
        variant = cell.mode
        if variant == "fp16":
            model = model.half()
        elif variant in ("int8", "int4"):
            model = quantize_weights(model.to(getattr(torch, p.quantize_from)), int(variant[3:]))
        weights = linear_weights(model)
        wbytes = sum(storage_bytes(w) for w in weights)
        numel = sum(w.numel() for w in weights)
        rows = [metric("linear_weight_bytes", wbytes, "B", storage=sorted({d for w in weights
                                                                           for d in storage_dtypes(w)})),
                metric("fp16_linear_weight_bytes", fp16_bytes, "B"),
                metric("compression_vs_fp16", fp16_bytes / wbytes, "x"),
                metric("bits_per_weight", 8 * wbytes / numel, "bits"),
                metric("model_bytes", model_bytes(model), "B")]
        rows += self._speed(model, variant, cell, ctx)
        rows += self._quality(model, variant, info["val_bpb"], cell, ctx)
        return [{**r, "variant": variant} for r in rows]

    def _speed(self, model: DecoderLM, variant: str, cell: Cell, ctx: RunContext) -> list[dict[str, Any]]:
        P = self.params.context
        gen = torch.Generator().manual_seed(cell.seed)
        tokens = torch.randint(0, 256, (1, P + 1), generator=gen).to(ctx.device)
        state = state_after(model, tokens[:, :P])
        if variant == "kv_int8":
            state = int8_cache(state)

        def prefill():
            with torch.no_grad():
                return model(tokens[:, :P])

        def decode():
            if variant == "kv_int8":
                return step_int8_cache(model, tokens[:, P], state)
            with torch.no_grad():
                return model.step(tokens[:, P], state)

        t_pre, row_pre = timed(prefill, ctx, "prefill_time_s", context=P)
        t_dec, row_dec = timed(decode, ctx, "decode_time_s", context=P)
        return [row_pre, metric("prefill_tokens_per_s", P / t_pre, "tok/s", context=P),
                row_dec, metric("decode_tokens_per_s", 1 / t_dec, "tok/s", context=P),
                metric("cache_bytes", state_nbytes(state["layers"]), "B", context=P)]

    def _quality(self, model: DecoderLM, variant: str, bpb_fp32: float, cell: Cell,
                 ctx: RunContext) -> list[dict[str, Any]]:
        p = self.params
        L = p.training.seq_len
        if variant != "kv_int8":
            bpb = causal_bits_per_byte(model, validation_text(p.training, ctx), L, device=ctx.device)["val_bpb"]
            return [metric("val_bpb", bpb, "bits/byte"), metric("val_bpb_fp32", bpb_fp32, "bits/byte"),
                    metric("ppl_change_pct", 100 * (2 ** (bpb - bpb_fp32) - 1), "%")]
        text = validation_text(p.training, ctx, p.kv_eval_bytes)
        init = lambda: model.init_state(1)  # noqa: E731
        exact = decode_bits_per_byte(lambda t, s: model.step(t.to(ctx.device), s), init, text, L)
        q = decode_bits_per_byte(lambda t, s: step_int8_cache(model, t.to(ctx.device), s),
                                 lambda: int8_cache(init()), text, L)
        return [metric("val_bpb", q, "bits/byte", scored="decode", eval_bytes=len(text)),
                metric("val_bpb_fp32", exact, "bits/byte", scored="decode", eval_bytes=len(text)),
                metric("ppl_change_pct", 100 * (2 ** (q - exact) - 1), "%")]

    @classmethod
    def report_section(cls, run, entry) -> list[str]:
        """One row per variant: bytes, compression against fp16, speed, quality change."""
        lines = header(entry, "quantization") + failed_lines(run, entry)
        rows = ok_rows(run, entry)
        if rows.empty:
            return lines
        wide = rows.pivot_table(index=["mixer", "d_model", "variant"], columns="metric", values="value",
                                aggfunc="first").reset_index()
        order = {v: i for i, v in enumerate(VARIANTS)}
        wide = wide.sort_values("variant", key=lambda s: s.map(order))
        cols = ["mixer", "d_model", "variant", "linear_weight_bytes", "compression_vs_fp16", "bits_per_weight",
                "model_bytes", "cache_bytes", "prefill_tokens_per_s", "decode_tokens_per_s", "val_bpb",
                "val_bpb_fp32", "ppl_change_pct"]
        lines += ["Weight bytes are measured from the tensors' storage (a quantized weight walked down to its int8 / "
                  "packed uint8 data and its scales); `compression_vs_fp16` = the same Linear weights in fp16 / "
                  "these bytes. `val_bpb_fp32` is the reference each variant is compared with (the KV-cache "
                  "variant: the same token-by-token decoding with an fp32 cache). Prefill and decode at the "
                  "entry's `context`, batch 1.", "", md(wide[[c for c in cols if c in wide]], ".4g"), ""]
        storage = rows[rows["metric"] == "linear_weight_bytes"]
        if "storage" in storage:
            lines += ["Storage dtypes of the Linear weights: " + "; ".join(
                f"{r.variant}: {', '.join(r.storage) if isinstance(r.storage, list) else r.storage}"
                for r in storage.itertuples()), ""]
        return lines
