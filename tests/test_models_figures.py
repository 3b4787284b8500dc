"""architectures/models/figures.py: the analytic figures are read off the real module on the meta device."""
from __future__ import annotations

import torch

from architectures.backbone import DecoderLM, LMConfig
from architectures.models import figures as F


class FakeLM(DecoderLM):
    """The zoo API's decoder methods on the generic DecoderLM (a stand-in independent of the presets)."""

    def active_params(self) -> int:
        return self.num_params()

    def prefill(self, tokens):
        state = self.init_state(tokens.shape[0])
        x = self._embed(tokens, 0)
        layers = []
        for block in self.blocks:
            y, s = block.mixer.prefill(block.norm1(x))
            x = x + y
            x = x + block.ffn(block.norm2(x))
            layers.append(s)
        return torch.nn.functional.linear(self.norm(x), self.embed.weight), {"pos": tokens.shape[1], "layers": layers}

    def state_bytes(self, batch, seq_len, dtype):
        return sum(b.mixer.state_bytes(batch, seq_len, dtype) for b in self.blocks)


def _fake(device="cpu", mixer="gqa", **hp):
    with torch.device(device):
        return FakeLM(LMConfig(mixer=mixer, mixer_hparams=hp, d_model=64, n_heads=4, n_layers=2, vocab_size=97))


def test_meta_flops_equal_real_flops():
    torch.manual_seed(0)
    real, meta = _fake("cpu", n_kv_heads=2), _fake("meta", n_kv_heads=2)
    a, b = F.model_figures(real, "decoder", context=33), F.model_figures(meta, "decoder", context=33)
    assert a.prefill_flops_per_token == b.prefill_flops_per_token > 0
    assert a.decode_flops_per_token == b.decode_flops_per_token > 0
    assert a.measured_state_bytes == b.measured_state_bytes


def test_flops_per_token_follow_the_module():
    d, L, V, n = 64, 2, 97, 32
    fig = F.model_figures(_fake("meta", n_kv_heads=4), "decoder", context=n)
    ffn = int(2 * 4.0 * d / 3)
    matmul = L * (4 * d * d + 3 * d * ffn) + d * V  # weight multiply-adds per token (q, k, v, o, SwiGLU, head)
    attention = L * 2 * n * d  # QK^T and AV over n keys: the last token reads n, the mean reads (n + 1) / 2
    assert fig.decode_flops_per_token == 2 * (matmul + L * 2 * (n + 1) * d)
    assert fig.prefill_flops_per_token == 2 * matmul + 2 * attention  # the explicit form computes the full square


def test_state_bytes_agree_with_the_state_and_scale_with_dtype():
    n = 40
    fig = F.model_figures(_fake("meta", n_kv_heads=1), "decoder", context=n)
    per_token = 2 * 2 * 1 * 16 * 4  # K and V, 2 layers, 1 KV head of 16, fp32
    assert fig.state_bytes_per_token["fp32"] == per_token
    assert fig.state_bytes_per_token["int4"] == per_token / 8
    assert fig.measured_state_bytes == n * per_token
    assert fig.state_bytes["bf16"]["1048576"] == 1048576 * per_token / 2
    assert fig.weight_bytes["int8"] == fig.params == fig.active_params


def test_meta_allocates_nothing():
    m = _fake("meta")
    assert all(p.is_meta for p in m.parameters())
    F.model_figures(m, "decoder", context=64)


def test_decode_roofline_bytes():
    fig = F.model_figures(_fake("meta", n_kv_heads=2), "decoder", context=16)
    got = F.decode_bytes_per_token(fig, 4096, "bf16")
    assert got == fig.params * 2 + fig.state_bytes["bf16"]["4096"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_every_full_preset_on_meta_allocates_no_weights():
    """Every registered preset's full size: parameters on meta, the figures computed, the process barely grows
    (the largest preset holds hundreds of GB of weights)."""
    import gc

    import architectures.models as M

    M.build_model(M.list_models()[0], "full", device="meta")  # warm-up: imports, allocator pools
    gc.collect()
    before = _rss_bytes()
    total = 0
    for name in M.list_models():
        preset = M.get_model(name)
        model = M.build_model(name, "full", device="meta")
        assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
        fig = F.model_figures(model, preset.kind, context=128, contexts=(4096,))
        assert fig.params == model.num_params() > 0 and fig.prefill_flops_per_token > 0
        total += fig.params * 4
        del model
    grown = _rss_bytes() - before
    assert grown < 300e6 and grown < total / 20, \
        f"RSS grew by {grown / 1e6:.0f} MB for {total / 1e9:.0f} GB of fp32 weights"


def test_moe_meta_flops_equal_real_flops():
    from architectures.models.moe import MoE

    torch.manual_seed(0)
    kw = dict(d_model=32, d_expert=24, n_experts=6, top_k=2, n_shared=1)
    real = MoE(**kw)
    with torch.device("meta"):
        meta = MoE(**kw)
    x = torch.randn(3, 17, 32)
    a, _ = F.count_flops(lambda: real(x))
    b, _ = F.count_flops(lambda: meta(x.to("meta")))
    assert a == b > 0


def test_reusing_identical_layers_changes_no_figure():
    """Identical meta layers run once: the same FLOPs and state as running every layer (mixed layer patterns, dense
    and MoE layers, encoder-decoder stacks with MoE expert lists)."""
    import architectures.models as M

    for name in ("jamba-v0.1", "deepseek-v3", "kimi-linear-48b-a3b", "mamba-2.8b", "switch-base-8", "t5-base"):
        preset = M.get_model(name)
        model = M.build_model(name, "tiny", device="meta")
        a = F.model_figures(model, preset.kind, context=40, contexts=(64,))
        b = F.model_figures(model, preset.kind, context=40, contexts=(64,), reuse_layers=False)
        assert a == b, name
        assert not any("forward" in vars(m) for m in model.modules())  # the patches are gone
