"""lm-evaluation-harness on harness checkpoints: a byte-level ``lm_eval`` model and a local validation task.

lm-eval is an optional extra (``pip install 'transformer-bench[lmeval]'``); only this module imports it, and only
``python -m harness lm-eval`` (or a user) imports this module. Importing it registers the model class with lm-eval's
registry as ``transformer-bench`` (``lm_eval.api.registry.get_model("transformer-bench")``; model args
``checkpoint=PATH[,device=cpu][,batch_size=16]``).

The model (``HarnessLM``) is byte-level: strings are encoded as UTF-8 bytes, the vocabulary is the 256 byte values.

- ``loglikelihood(context, continuation)``: log p(continuation bytes | context bytes); an empty context is the prefix
  byte ``"\\n"`` (byte models have no BOS). A continuation is scored in chunks of at most L bytes (L = the
  checkpoint's training context length), each with the L bytes before it as context.
- ``loglikelihood_rolling(text)``: the log-likelihood of every byte of the text, with lm-eval's own
  ``get_rolling_token_windows(prefix="\\n", max_seq_len=L, context_len=1)``: non-overlapping windows of L predicted
  bytes, the last one with a full L bytes of context. This is what the harness's ``val_bpb``
  (``harness.lm.causal_bits_per_byte``) computes with its own windowing, so on the same text the two agree.
- ``generate_until``: greedy decoding. Mixers with a ``decode`` mode use the model's recurrent ``step`` (one state per
  layer: a KV cache or a recurrent state), others recompute the forward over the last L bytes for each new byte.
  As in lm-eval's HF model, the context is cut to its last ``L - max_gen_toks`` bytes (at least 1) so that the
  sequence stays within the trained length. Sampling is not supported (``do_sample: true`` is an error).

The local task (``write_local_task``, name ``transformer_bench_val``): the validation text stored in the checkpoint
(the exact bytes the harness scored) as one JSON-lines document, loaded by lm-eval through ``datasets``' packaged
``json`` builder from a local file (``dataset_path: json``, ``data_files``), ``output_type: loglikelihood_rolling``,
metrics ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``. Nothing is downloaded: when only local tasks
run, ``HF_DATASETS_OFFLINE`` and ``HF_HUB_OFFLINE`` are set for the run.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
import yaml

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("lm-eval is not installed: pip install 'transformer-bench[lmeval]' (or lm-eval>=0.4.5)") from err

import architectures

from .lm import load_checkpoint

MODEL_NAME = "transformer-bench"
LOCAL_TASK = "transformer_bench_val"


@register_model(MODEL_NAME)
class HarnessLM(LM):
    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int | str | None = 16,
                 max_batch_size: int | None = None, max_gen_toks: int = 256, **_: Any):
        super().__init__()
        self._device = torch.device(device or "cpu")
        self.model, self.meta = load_checkpoint(checkpoint, self._device)
        if self.meta["objective"] != "causal_lm":
            raise ValueError(f"{checkpoint} is a {self.meta['objective']} encoder; lm-eval's likelihood and "
                             "generation requests need a causal (next-byte) LM")
        self.max_length = int(self.meta["seq_len"])
        self.prefix = int(self.meta["prefix_byte"])
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" -> 16
        self.max_gen_toks = int(max_gen_toks)
        self.can_step = "decode" in architectures.get_mixer(self.model.cfg.mixer).spec.modes

    # ---- scoring --------------------------------------------------------------------------------------------------
    def _rows(self, context: list[int], continuation: list[int]) -> list[tuple[list[int], list[int]]]:
        """(inputs, targets) rows that score every continuation byte once, each with up to L bytes of context:
        inputs tokens[s:b-1] predict tokens[s+1:b], of which the last b-a (= targets tokens[a:b]) are scored."""
        tokens, L = context + continuation, self.max_length
        rows = []
        for a in range(len(context), len(tokens), L):
            b = min(a + L, len(tokens))
            s = max(0, b - 1 - L)
            rows.append((tokens[s:b - 1], tokens[a:b]))
        return rows

    @torch.no_grad()
    def _score_rows(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(targets), all targets greedy) per row, in batches of rows of similar length."""
        out: list[tuple[float, bool] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            width = len(rows[idx[0]][0])
            # right padding is invisible to a causal model at the real positions
            inputs = torch.zeros(len(idx), width, dtype=torch.long)  # (B, T)
            for j, k in enumerate(idx):
                inputs[j, :len(rows[k][0])] = torch.tensor(rows[k][0])
            logprobs = F.log_softmax(self.model(inputs.to(self._device)).float(), dim=-1).cpu()  # (B, T, 256)
            for j, k in enumerate(idx):
                x, t = rows[k]
                lp = logprobs[j, len(x) - len(t):len(x)]  # (len(t), 256): the positions that predict the targets
                target = torch.tensor(t)
                out[k] = (float(lp.gather(-1, target[:, None]).double().sum()), bool((lp.argmax(-1) == target).all()))
        return out  # type: ignore[return-value]

    def _loglikelihood_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        rows, owner = [], []
        for i, (context, continuation) in enumerate(pairs):
            for row in self._rows(context or [self.prefix], continuation):
                rows.append(row)
                owner.append(i)
        totals = [[0.0, True] for _ in pairs]
        for i, (logprob, greedy) in zip(owner, self._score_rows(rows)):
            totals[i][0] += logprob
            totals[i][1] = totals[i][1] and greedy
        return [(t[0], t[1]) for t in totals]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [(list(ctx.encode("utf-8")), list(cont.encode("utf-8"))) for ctx, cont in (r.args for r in requests)]
        results = self._loglikelihood_pairs(pairs)
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for r in requests:
            (text,) = r.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=list(text.encode("utf-8")), prefix_token=self.prefix, max_seq_len=self.max_length,
                context_len=1)]
            total = sum(lp for lp, _ in self._loglikelihood_pairs(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            results.append(total)
        return results

    # ---- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _greedy(self, context: list[int], max_new: int, until: list[str]) -> bytes:
        model, out = self.model, bytearray()

        def stop() -> bool:
            text = out.decode("utf-8", errors="ignore")
            return any(u and u in text for u in until)

        if self.can_step:
            states = model.init_state(1)
            for tok in context:  # prefill by stepping: valid for every decode-capable mixer
                logits, states = model.step(torch.tensor([tok], device=self._device), states)
            for _ in range(max_new):
                nxt = int(logits[0].argmax())
                out.append(nxt)
                if stop():
                    break
                logits, states = model.step(torch.tensor([nxt], device=self._device), states)
        else:
            tokens = list(context)
            for _ in range(max_new):
                window = torch.tensor([tokens[-self.max_length:]], device=self._device)  # (1, T)
                nxt = int(model(window)[0, -1].argmax())
                tokens.append(nxt)
                out.append(nxt)
                if stop():
                    break
        return bytes(out)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for r in requests:
            context, gen_kwargs = r.args
            kwargs = dict(gen_kwargs or {})
            if kwargs.get("do_sample") and float(kwargs.get("temperature", 1.0)) > 0:
                raise ValueError("HarnessLM generates greedily; sampling (do_sample: true) is not supported")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            ctx = list(context.encode("utf-8")) or [self.prefix]
            ctx = ctx[-max(1, self.max_length - max_new):]
            text = self._greedy(ctx, max_new, until).decode("utf-8", errors="replace")
            for u in until:  # cut at the first stop sequence, as lm-eval's models do
                if u:
                    text = text.split(u)[0]
            self.cache_hook.add_partial("generate_until", r.args, text)
            results.append(text)
        return results


# ---- the local task and the runner ----------------------------------------------------------------------------------

def write_local_task(val_text: str, directory: str | Path, task: str = LOCAL_TASK) -> Path:
    """Write ``<task>.jsonl`` (one document: the validation text) and ``<task>.yaml`` (an lm-eval task over it)."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{task}.jsonl"
    data.write_text(json.dumps({"text": val_text}) + "\n", encoding="utf-8")
    config = {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(data)}, "cache_dir": str(directory / "hf_cache")},
        "output_type": "loglikelihood_rolling",
        "validation_split": "validation",
        "doc_to_text": "",
        "doc_to_target": "text",  # the raw field: no template rendering touches the text
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0},
    }
    path = directory / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_lm_eval(checkpoint: str | Path, tasks: list[str] | None = None, *, device: str = "cpu",
                batch_size: int = 16, limit: int | float | None = None, num_fewshot: int | None = None,
                include_path: list[str] | None = None, task_dir: str | Path | None = None) -> dict[str, Any]:
    """Run lm-eval ``tasks`` (default: the local validation task) on a harness checkpoint; lm-eval's results dict.

    The local task ``transformer_bench_val`` is written from the checkpoint's validation text into ``task_dir``
    (default: a temporary directory). When it is the only task, lm-eval's defaults are not scanned and the run is
    offline (``HF_DATASETS_OFFLINE=1``, ``HF_HUB_OFFLINE=1``)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = list(tasks or [LOCAL_TASK])
    meta = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    val_text = meta.get("val_text")
    only_local = set(tasks) == {LOCAL_TASK} and not include_path
    with contextlib.ExitStack() as stack:
        directory = Path(task_dir) if task_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        paths = list(include_path or [])
        if LOCAL_TASK in tasks:
            if not val_text:
                raise ValueError(f"{checkpoint} holds no validation text for the local task {LOCAL_TASK}")
            write_local_task(val_text, directory)
            paths.append(str(directory))
        if only_local:
            stack.enter_context(_env(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"))
        manager = TaskManager(include_path=paths or None, include_defaults=not only_local)
        return simple_evaluate(model=MODEL_NAME, model_args={"checkpoint": str(checkpoint)}, tasks=tasks,
                               device=device, batch_size=batch_size, limit=limit, num_fewshot=num_fewshot,
                               task_manager=manager, bootstrap_iters=0, log_samples=False)
