"""Analytic figures of a whole model, read off the real module built on the meta device (no memory, no data).

    figures = model_figures(model, kind, context=4096)

- ``params``: every parameter of the module (``model.num_params()``); ``active_params``: per token
  (``model.active_params()``: MoE counts the routed top-k and the shared experts, see each model's convention).
- FLOPs are counted at ``context`` tokens, or at as many as a learned position table holds (BERT 512; decoders one
  fewer, for the decode step after the prefill: GPT-2 1023, GPT-3 2047; ``ModelFigures.context`` says which).
  State bytes at longer contexts are still the module's formula.
- ``prefill_flops_per_token``: FLOPs of the real forward (decoders: ``prefill``) over ``context`` tokens, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors, divided by ``context``. Attention's n^2 term is in it,
  so the figure grows with the context. ``decode_flops_per_token``: FLOPs of one ``step`` after that prefill, i.e.
  with a state of ``context`` tokens. Matmuls and attention kernels only (the counter's convention: 2 FLOPs per
  multiply-add; element-wise work, norms and softmax are not counted).
- ``state_bytes``: the decode state (KV cache, latent cache, recurrent state) of all layers from
  ``model.state_bytes(1, n, dtype)`` at each context of ``CONTEXTS`` and each cache dtype of ``BITS``. fp32 and bf16
  are the module's own formula at that dtype; int8 / int4 scale the fp32 figure by bits / 32 (the values only: no
  quantisation scales). ``state_bytes_per_token`` is the growth of the first token (sb(1) - sb(0)),
  ``state_bytes_fixed`` the part that does not grow (sb(0): recurrent states, convolution buffers).
  ``measured_state_bytes`` is the size of the state tensors the meta prefill actually returned at ``context``, which
  the tests hold equal to the formula.
- ``weight_bytes``: ``params`` x bits / 8 per dtype (values only; int4 = half a byte per weight).

MoE on the meta device: routing is data-dependent and a meta tensor has no data; ``architectures.models.moe.MoE``
routes meta inputs evenly (k expert evaluations per token), so the counter sees what any routing without capacity
dropping costs.

Encoders and vision models have no decode state: their decode and state figures are None, and the forward runs on
``context`` tokens, or for vision on one image of the model's own size (FLOPs per token = per patch position, [CLS]
included).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

BITS = {"fp32": 32, "bf16": 16, "int8": 8, "int4": 4}  # cache / weight dtypes the figures are given at
CONTEXTS = (4096, 32768, 131072, 1048576)  # 4K, 32K, 128K, 1M tokens
DECODER_KINDS = ("decoder",)


@dataclass
class ModelFigures:
    kind: str
    params: int
    active_params: int
    context: int  # the context the FLOPs were counted at
    prefill_flops_per_token: float
    decode_flops_per_token: float | None
    state_bytes_per_token: dict[str, float] | None  # dtype -> bytes added per token
    state_bytes_fixed: dict[str, float] | None  # dtype -> bytes that do not grow with the context
    state_bytes: dict[str, dict[str, float]] | None  # dtype -> {context -> bytes}, contexts as strings ("4096")
    measured_state_bytes: int | None  # bytes of the state the meta prefill returned (fp32 at the module's dtype)
    weight_bytes: dict[str, float] = field(default_factory=dict)  # dtype -> bytes of all parameters
    active_weight_bytes: dict[str, float] = field(default_factory=dict)  # dtype -> bytes read per token

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _signature(block: nn.Module) -> str:
    """What a layer computes, up to the values of its weights: every submodule's type, parameter and buffer shapes
    and plain attributes (hyperparameters such as top_k, window, chunk_size, causal)."""
    plain = (int, float, str, bool, type(None), tuple)
    parts = []
    for name, m in block.named_modules():
        attrs = sorted((k, repr(v)) for k, v in vars(m).items()
                       if not k.startswith("_") and k != "training" and isinstance(v, plain))
        tensors = [(n, tuple(t.shape), str(t.dtype)) for n, t in [*m.named_parameters(recurse=False),
                                                                  *m.named_buffers(recurse=False)]]
        parts.append((name, type(m).__qualname__, attrs, tensors))
    return repr(parts)


def _shapes(obj: Any) -> str:
    """A call's arguments with tensors replaced by (shape, dtype): what a meta computation depends on."""
    return repr(tree_map(lambda t: ("tensor", tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else t, obj))


@contextmanager
def reuse_identical_layers(model: nn.Module, counter: FlopCounterMode):
    """Within: a meta layer of a ModuleList whose signature and argument shapes were seen before returns the first
    one's outputs (meta tensors: shapes only) and adds the first one's FLOPs to ``counter`` instead of running again.
    Exact on meta (every output and FLOP depends on shapes only) and much faster: a Python meta forward of one
    recurrent layer takes seconds, and Mamba-2.8B has 64 identical ones."""
    cache: dict[tuple, tuple[Any, dict]] = {}
    patched = []

    def wrap(block: nn.Module, method: str, signature: str):
        original = getattr(block, method)

        def call(*args, **kwargs):
            key = (signature, method, _shapes((args, kwargs)))
            if key not in cache:
                before = dict(counter.flop_counts["Global"])
                out = original(*args, **kwargs)
                after = counter.flop_counts["Global"]
                cache[key] = (out, {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)})
                return out
            out, counts = cache[key]
            for op, n in counts.items():
                counter.flop_counts["Global"][op] += n
            return out

        setattr(block, method, call)  # an instance attribute: nn.Module.__call__ looks forward up on the instance
        patched.append((block, method))

    for layers in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        for block in layers:
            if any(not p.is_meta for p in block.parameters()):
                continue
            signature = _signature(block)
            for method in ("forward", "prefill", "step"):
                if callable(getattr(block, method, None)):
                    wrap(block, method, signature)
    try:
        yield
    finally:
        for block, method in patched:
            delattr(block, method)


def count_flops(fn, model: nn.Module | None = None) -> tuple[int, Any]:
    """(FLOPs, result) of ``fn()`` under a FlopCounterMode (works on meta tensors: the formulas use shapes only).
    With ``model`` (on meta), identical layers run once (``reuse_identical_layers``)."""
    from harness.measure import count_flops_mode  # the counter with the CPU SDPA formulas the harness uses

    counter: FlopCounterMode = count_flops_mode()
    with counter:
        if model is None:
            result = fn()
        else:
            with reuse_identical_layers(model, counter):
                result = fn()
    return int(counter.get_total_flops()), result


def tensor_bytes(state: Any) -> int:
    """Bytes of every tensor reachable from a state (dicts, lists, tuples), meta tensors included (no dedup: meta
    tensors have no addresses; states hold distinct tensors)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def example_input(model: nn.Module, kind: str, context: int, batch: int = 1) -> Any:
    """The forward input of a model kind on the model's device: tokens (B, T); vision: images (B, C, H, W) of the
    model's config (``cfg.image_size``, ``cfg.n_channels``); encoder-decoder: (src, tgt), both of ``context`` tokens."""
    device = _device(model)
    tokens = torch.zeros(batch, context, dtype=torch.long, device=device)  # (B, T)
    if kind == "vision":
        cfg = model.cfg
        return torch.zeros(batch, cfg.n_channels, cfg.image_size, cfg.image_size, device=device)  # (B, C, H, W)
    if kind == "encoder-decoder":
        return tokens, tokens.clone()
    return tokens


def max_context(model: nn.Module) -> int:
    """The longest input a model takes: a learned position table's rows (BERT 512), else unbounded."""
    cfg = getattr(model, "cfg", None)
    if getattr(cfg, "positions", None) == "learned":
        return cfg.max_seq_len - getattr(cfg, "position_offset", 0)
    return 2**62


def _scaled(fp32: float) -> dict[str, float]:
    return {name: fp32 * bits / 32 for name, bits in BITS.items()}


def state_figures(model: nn.Module, contexts=CONTEXTS) -> dict[str, Any]:
    """Decode-state bytes of a decoder from its own ``state_bytes`` formula (batch 1)."""
    f32 = {n: float(model.state_bytes(1, n, torch.float32)) for n in contexts}
    bf16 = {n: float(model.state_bytes(1, n, torch.bfloat16)) for n in contexts}
    zero, one = float(model.state_bytes(1, 0, torch.float32)), float(model.state_bytes(1, 1, torch.float32))
    by_dtype = {name: {str(n): f32[n] * bits / 32 for n in contexts} for name, bits in BITS.items()}
    by_dtype["bf16"] = {str(n): bf16[n] for n in contexts}
    return {"state_bytes": by_dtype, "state_bytes_per_token": _scaled(one - zero), "state_bytes_fixed": _scaled(zero)}


@torch.no_grad()
def model_figures(model: nn.Module, kind: str, context: int = 4096, contexts=CONTEXTS,
                  reuse_layers: bool = True) -> ModelFigures:
    """The figures of a built model (any device; meta is the point). See the module docstring. ``reuse_layers``:
    identical meta layers run once (``reuse_identical_layers``; the tests hold it equal to running every layer)."""
    reuse = model if reuse_layers else None
    params, active = int(model.num_params()), int(model.active_params())
    weights = {name: params * bits / 8 for name, bits in BITS.items()}
    active_weights = {name: active * bits / 8 for name, bits in BITS.items()}
    # a decoder also steps once after the prefill: one position fewer than the table holds
    context = min(context, max_context(model) - (1 if kind in DECODER_KINDS else 0))
    if kind not in DECODER_KINDS:
        x = example_input(model, kind, context)
        flops, _ = count_flops(lambda: model(*x) if isinstance(x, tuple) else model(x), reuse)
        per = context if kind != "vision" else max(1, getattr(model, "n_positions", 1))
        return ModelFigures(kind, params, active, context, flops / per, None, None, None, None, None, weights,
                            active_weights)
    tokens = example_input(model, kind, context)
    prefill_flops, (_, state) = count_flops(lambda: model.prefill(tokens), reuse)
    last = torch.zeros(1, dtype=torch.long, device=tokens.device)  # (B,)
    decode_flops, _ = count_flops(lambda: model.step(last, state), reuse)
    st = state_figures(model, contexts)
    return ModelFigures(kind, params, active, context, prefill_flops / context, float(decode_flops),
                        st["state_bytes_per_token"], st["state_bytes_fixed"], st["state_bytes"], tensor_bytes(state),
                        weights, active_weights)


def decode_bytes_per_token(fig: ModelFigures, context: int, dtype: str = "bf16") -> float:
    """Bytes read from memory to decode one token at ``context`` (the decode roofline of a memory-bound step, batch
    1): the active weights once plus the whole decode state, both at ``dtype``. An analytic estimate."""
    if fig.state_bytes is None:
        raise ValueError(f"a {fig.kind} model has no decode step")
    if str(context) not in fig.state_bytes[dtype]:
        raise ValueError(f"no state figure at context {context}; computed at {list(fig.state_bytes[dtype])}")
    return fig.active_weight_bytes[dtype] + fig.state_bytes[dtype][str(context)]
