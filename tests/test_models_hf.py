"""The model zoo against Hugging Face ``transformers`` (the ``oracles`` extra): parameter counts of every full-size
preset equal transformers' class built from the same config on the meta device; tiny flavours give the same logits
after a weight transplant (fp32, max abs diff <= 1e-4); presets are built from transformers configs and config.json."""
from __future__ import annotations

import json

import pytest
import torch

from architectures.models import build_model, get_model, list_models

transformers = pytest.importorskip("transformers", reason="transformers (the oracles extra) is not installed")
from transformers import AutoModelForCausalLM  # noqa: E402

from architectures.models.hf import from_hf_config, transplant  # noqa: E402

WITH_HF = [n for n in list_models() if get_model(n).hf_config is not None and get_model(n).kind == "decoder"]
# Tiny flavours checked logit by logit: every family transformers implements.
TRANSPLANTED = ["gpt2", "llama2-7b", "llama3-8b", "mistral-7b", "mixtral-8x7b", "mamba-2.8b", "deepseek-v3",
                "jamba-v0.1", "kimi-linear-48b-a3b"]


def hf_model(cfg, device: str = "cpu"):
    cfg._attn_implementation = "eager"
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg)


def test_every_family_transformers_implements_is_covered():
    assert {get_model(n).family for n in WITH_HF} >= {"GPT", "LLaMA", "Mistral", "Mixtral", "DeepSeek", "Jamba",
                                                        "Kimi Linear", "Mamba"}


@pytest.mark.parametrize("name", WITH_HF)
def test_full_size_parameter_count_equals_transformers(name):
    preset = get_model(name)
    ours = build_model(name, "full", device="meta").num_params()
    theirs = sum(p.numel() for p in hf_model(preset.hf_config(preset.full), "meta").parameters())
    assert ours == theirs, f"{name}: ours {ours:,} vs transformers {theirs:,}"


@pytest.mark.parametrize("name", TRANSPLANTED)
def test_tiny_logits_equal_transformers_after_weight_transplant(name, monkeypatch):
    preset = get_model(name)
    if name == "kimi-linear-48b-a3b":  # with fla installed transformers picks fla's Triton KDA kernels (CUDA only):
        import transformers.models.kimi_linear.modeling_kimi_linear as kimi  # use transformers' own torch path

        for fn in ("chunk_kimi_delta_attention", "recurrent_kimi_delta_attention"):
            wrapped = getattr(kimi, fn)
            if hasattr(wrapped, "__wrapped__"):  # transformers < 5.25 calls fla's kernel whatever the device
                monkeypatch.setattr(kimi, fn, wrapped.__wrapped__)
            # 5.25 and newer wrap it in a `kernels` module that sends CPU tensors to the torch path itself
    torch.manual_seed(0)
    theirs = hf_model(preset.hf_config(preset.tiny)).eval()
    with torch.no_grad():  # away from the init's ones, zeros and ties, so that every weight matters
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for buf_name, buf in theirs.named_buffers():
            if buf_name.endswith("e_score_correction_bias"):  # DeepSeek's selection bias steers routing: randomise
                buf.copy_(torch.randn_like(buf) * 0.05)
    ours = build_model(name).eval()
    transplant(ours, theirs)
    x = torch.randint(0, preset.tiny.vocab_size, (2, 29), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x).logits, ours(x)
    assert (got - expected).abs().max().item() <= 1e-4


def test_transplant_refuses_an_unmapped_model():
    theirs = hf_model(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    ours = build_model("llama2-7b")
    with pytest.raises(KeyError, match="no transplant rule for our"):
        transplant(ours, theirs)


@pytest.mark.parametrize("name", WITH_HF)
def test_preset_built_from_its_transformers_config_is_the_same_model(name):
    preset = get_model(name)
    cfg = from_hf_config(preset.hf_config(preset.full))
    assert cfg.layer_mixers() == preset.full.layer_mixers() and cfg.layer_ffns() == preset.full.layer_ffns()
    ours = build_model(name, "full", device="meta")
    rebuilt = build_model(name, "full", device="meta", config=cfg)
    assert rebuilt.num_params() == ours.num_params() and rebuilt.active_params() == ours.active_params()


def test_preset_from_a_local_config_json(tmp_path):
    preset = get_model("mixtral-8x7b")
    preset.hf_config(preset.full).to_json_file(tmp_path / "config.json")
    cfg = from_hf_config(tmp_path)  # a directory holding config.json, or the file itself
    assert cfg == from_hf_config(tmp_path / "config.json") == from_hf_config(preset.hf_config(preset.full))
    assert (cfg.n_experts, cfg.top_k, cfg.d_expert, cfg.mixer_hparams["gqa"]["n_kv_heads"]) == (8, 2, 14336, 8)
    assert build_model("mixtral-8x7b", "full", device="meta", config=cfg).num_params() == 46_702_792_704


def test_config_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config\.json: no 'model_type'"):
        from_hf_config(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: cannot read"):
        from_hf_config(bad)
    with pytest.raises(ValueError, match="model_type 'whisper' is not supported; supported: "):
        from_hf_config(transformers.WhisperConfig())
