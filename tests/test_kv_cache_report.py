"""The report's "KV cache per token" table: per-token decode cache of growing caches, at the run's size and at the
published configurations of the specs, against standard at the same heads x head size."""
import json

import pandas as pd
import pytest

import architectures
from harness.analysis import kv_cache_per_token


def decode_state_rows(mixer, d_model=128, n_heads=4, lengths=(256, 1024)):
    cls = architectures.get_mixer(mixer)
    return [{"benchmark": "s", "mixer": mixer, "mixer_name": mixer, "impl": "torch", "mode": "decode", "batch": 1,
             "d_model": d_model, "n_heads": n_heads, "dtype": "float32", "seed": 0, "seq_len": n,
             "metric": "state_bytes", "value": 1.0, "status": "ok",
             "hparams": json.loads(json.dumps(dict(cls.spec.default_hparams)))} for n in lengths]


def test_mla_against_standard_at_the_run_size_and_at_deepseek_v3():
    df = pd.DataFrame(decode_state_rows("mla") + decode_state_rows("standard") + decode_state_rows("linear"))
    specs = {name: architectures.get_mixer(name).spec.as_dict() for name in ("mla", "standard", "linear")}
    specs = json.loads(json.dumps(specs))  # as read back from a run's specs.json
    table = kv_cache_per_token(df, specs).set_index(["mixer", "config"])
    run = table.loc[("mla", "run: d_model=128, n=1024")]
    assert run["elements_per_token"] == 4 * 32 + 16 and run["standard_elements_per_token"] == 2 * 4 * 32
    assert run["bytes_per_token"] == 144 * 4 and run["compression_vs_standard"] == pytest.approx(256 / 144)
    v3 = table.loc[("mla", "DeepSeek-V3: d_model=7168")]
    assert (v3["n_heads"], v3["head_dim"], v3["elements_per_token"]) == (128, 128, 512 + 64)
    assert v3["compression_vs_standard"] == pytest.approx(2 * 128 * 128 / 576)
    assert table.loc[("standard", "run: d_model=128, n=1024")]["compression_vs_standard"] == 1
    assert "linear" not in table.index.get_level_values("mixer")  # a constant state has no per-token cache


def test_published_configs_are_recorded_with_the_spec():
    d = architectures.get_mixer("mla").spec.as_dict()["published_configs"]["DeepSeek-V3"]
    assert d["hparams"]["kv_lora_rank"] == 512 and d["n_heads"] == 128 and d["head_dim"] == 128
    assert architectures.get_mixer("standard").spec.as_dict()["published_configs"] == {}
