"""CPU-seconds per training step, at one thread, of every registered causal mixer at the shapes of the CPU profiles
of suites/perplexity.yaml (context 256, batch 16, d_model 128, 4 heads, 2 layers with SwiGLU, vocabulary 256) and of
the MQAR entries (lengths 64 / 128 / 256, batch 256, d_model 64, one head, mixer-only blocks, vocabulary 64; windowed
mixers with the suites' windows). The mean of two steps after one warm-up step, by ``time.process_time``: the
figure a budget is computed from (CPU-seconds of a training = steps x this), robust to other load on the machine.

    PYTHONPATH=. python scripts/training_step_costs.py > reports/training-step-costs-cpu.jsonl
"""
import json
import time

import torch

import architectures
from architectures.backbone import DecoderLM, LMConfig
from harness.training import lm_loss

SHAPES = {"ppl256": (256, 16, 128, 4, 256, "swiglu"), "mqar64": (64, 256, 64, 1, 64, "none"),
          "mqar128": (128, 256, 64, 1, 64, "none"), "mqar256": (256, 256, 64, 1, 64, "none")}
WINDOWS = {"sliding_window": lambda n: {"window": n // 4}, "longformer": lambda n: {"window": n // 4},
           "transformer_xl": lambda n: {"segment_len": n // 8, "mem_len": n // 8},
           "gqa": lambda n: {"n_kv_heads": 1}}


def step_cost(name: str, shape: tuple) -> float:
    L, B, d, h, V, ffn = shape
    hparams = WINDOWS[name](L) if name in WINDOWS and ffn == "none" else {}
    model = DecoderLM(LMConfig(mixer=name, mixer_hparams=hparams, vocab_size=V, d_model=d, n_layers=2, n_heads=h,
                               ffn=ffn))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randint(0, V, (B, L))
    for i in range(3):
        if i == 1:
            start = time.process_time()
        loss = lm_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - start) / 2


def main() -> None:
    torch.set_num_threads(1)
    for name in architectures.list_mixers():
        if "causal" not in architectures.get_mixer(name).spec.modes:
            continue
        row = {"mixer": name}
        for tag, shape in SHAPES.items():
            try:
                row[tag] = round(step_cost(name, shape), 3)
            except Exception as err:  # noqa: BLE001 - a figure or why there is none
                row[tag] = f"error {type(err).__name__}: {err}"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
