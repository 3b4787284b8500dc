"""Byte-level language models: validation bits-per-byte, masked-LM bits-per-byte, checkpoints.

Shared by the ``perplexity`` benchmark and the lm-eval adapter (``harness/lm_eval_adapter.py``).

**Causal bits-per-byte** (``causal_bits_per_byte``) scores every byte of a text exactly once, as lm-eval's
``loglikelihood_rolling`` does for one document: a byte-level model has no BOS token, so the text is preceded by one
``PREFIX_BYTE`` (``"\\n"``: a document starts after a newline) and cut into consecutive, non-overlapping windows of
the model's context length L: window k predicts bytes [kL, (k+1)L) from the L inputs just before them (the first
window's first input is the prefix byte); the last, shorter window keeps a full L bytes of context and scores only its
new bytes. bpb = (sum of -log p over the N bytes) / (N ln 2); per-byte perplexity = 2 ** bpb. The lm-eval adapter
gets its windows from lm-eval's own ``get_rolling_token_windows``, so the agreement test compares two
implementations of the same quantity.

**Masked-LM bits-per-byte** (``masked_bits_per_byte``), for bidirectional encoders: the text is cut into
non-overlapping windows of L bytes (the last one shifted back to end at the text's end, scoring only bytes not yet
scored); ~``mask_prob`` of the bytes, drawn once from a generator with a fixed seed (the same masks for every mixer),
are replaced by the ``[MASK]`` token (id 256) and predicted; bpb is the mean -log2 p over the masked bytes, with the
model's distribution restricted to the 256 bytes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from architectures.backbone import DecoderLM, LMConfig

from .corpora import as_tensor

PREFIX_BYTE = 10  # "\n": the context of a document's first byte
BYTES = 256  # the byte vocabulary
MASK_ID = 256  # [MASK] of the masked-LM encoders (their vocabulary is 257)
CHECKPOINT_FORMAT = "transformer-bench-lm/1"


class ByteLogits(nn.Module):
    """A masked-LM encoder seen as a byte model: logits restricted to the 256 bytes (the [MASK] class dropped)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)[..., :BYTES]


class Autocast(nn.Module):
    """Run the forward in ``dtype`` (mixed precision; parameters stay fp32); logits come back in fp32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(tokens.device.type, dtype=self.dtype):
            return self.model(tokens).float()


def causal_windows(n: int, seq_len: int) -> list[tuple[int, int, int]]:
    """Windows over the token stream [PREFIX] + text (n text bytes): (start, end, first_scored) with the input
    tokens [start, end) predicting text bytes [start, end), of which those from ``first_scored`` on are scored."""
    windows = []
    for first in range(0, n, seq_len):
        end = min(first + seq_len, n)
        windows.append((max(0, end - seq_len), end, first))
    return windows


@torch.no_grad()
def causal_bits_per_byte(model: nn.Module, text: bytes, seq_len: int, batch_size: int = 16,
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean next-byte cross-entropy of ``model`` over every byte of ``text`` (see the module docstring)."""
    if not text:
        raise ValueError("no text to evaluate")
    was_training = model.training
    model.eval()
    data = as_tensor(text).long()
    stream = torch.cat([torch.tensor([PREFIX_BYTE]), data])  # (N + 1,): stream[i] is the input predicting data[i]
    total, count = 0.0, 0
    windows = causal_windows(len(data), seq_len)
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        inputs = torch.stack([stream[s:e] for s, e, _ in group])  # (B, L) (L < seq_len only if the text is short)
        targets = torch.stack([data[s:e] for s, e, _ in group])  # (B, L)
        keep = torch.stack([torch.arange(s, e) >= first for s, e, first in group])  # (B, L) scored positions
        logits = model(inputs.to(device)).float()  # (B, L, 256)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.to(device).reshape(-1),
                              reduction="none")  # (B * L,)
        total += float(nll[keep.to(device).reshape(-1)].double().sum())
        count += int(keep.sum())
    model.train(was_training)
    assert count == len(data), (count, len(data))
    return _summary(total, count)


def fixed_mask(n: int, mask_prob: float, seed: int) -> torch.Tensor:
    """(n,) bool: which bytes of an evaluation text are masked (the same for every model)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, generator=gen) < mask_prob
    if not mask.any():
        mask[0] = True
    return mask


@torch.no_grad()
def masked_bits_per_byte(model: nn.Module, text: bytes, seq_len: int, mask_prob: float = 0.15, seed: int = 0,
                         batch_size: int = 16, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean cross-entropy over the masked bytes of ``text`` for a bidirectional masked-LM ``model`` whose logits are
    over the 256 bytes (wrap a 257-token encoder in ``ByteLogits``)."""
    if len(text) < seq_len:
        raise ValueError(f"masked-LM evaluation needs at least one window of {seq_len} bytes, got {len(text)}")
    was_training = model.training
    model.eval()
    data = as_tensor(text).long()
    mask = fixed_mask(len(data), mask_prob, seed)
    total, count = 0.0, 0
    windows = causal_windows(len(data), seq_len)  # same tiling; the last window ends at the text's end
    for i in range(0, len(windows), batch_size):
        group = windows[i:i + batch_size]
        x = torch.stack([data[s:e] for s, e, _ in group])  # (B, L)
        m = torch.stack([mask[s:e] for s, e, _ in group])  # (B, L)
        new = torch.stack([torch.arange(s, e) >= first for s, e, first in group])  # (B, L) not yet scored
        inputs = x.masked_fill(m, MASK_ID)
        logits = model(inputs.to(device)).float()  # (B, L, 256)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.to(device).reshape(-1), reduction="none")
        scored = (m & new).to(device).reshape(-1)
        total += float(nll[scored].double().sum())
        count += int(scored.sum())
    model.train(was_training)
    return _summary(total, count)


def _summary(total_nats: float, count: int) -> dict[str, float]:
    loss = total_nats / count
    bpb = loss / math.log(2)
    return {"val_loss": loss, "val_bpb": bpb, "val_ppl": 2.0 ** bpb, "bytes": count}


# ---- checkpoints ----------------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, model: DecoderLM, *, objective: str, seq_len: int, val_text: str,
                    **meta: Any) -> Path:
    """A checkpoint is a dict of plain values and tensors (loadable with ``weights_only=True``): the LMConfig, the
    state_dict, the objective, the training context length, the validation text it was scored on, and ``meta``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "lm_config": model.cfg.to_dict(), "state_dict": state,
                "objective": objective, "seq_len": seq_len, "prefix_byte": PREFIX_BYTE, "mask_id": MASK_ID,
                "val_text": val_text, **meta}, path)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[DecoderLM, dict[str, Any]]:
    """(model in eval mode on ``device``, the checkpoint's metadata without the weights)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a transformer-bench LM checkpoint (format {ckpt.get('format')!r})")
    model = DecoderLM(LMConfig(**ckpt["lm_config"]))
    model.load_state_dict(ckpt.pop("state_dict"))
    return model.to(device).eval(), ckpt
