"""MLA: matches Hugging Face's DeepseekV3Attention (forward, and our absorbed decode against its cached decode), the
absorbed form equals the expanded one, a decoding step never re-expands the cache, and the cache per token is
(d_c + d_rope) elements."""
import pytest
import torch

import architectures
from architectures import measured_state_bytes
from architectures.ops.latent_attention import (absorbed_latent_attention, latent_attention,
                                                naive_latent_attention)

from ._tensors import LargestTensor
from .conftest import make_mixer

SMALL = dict(kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=10)


@pytest.mark.parametrize("causal", [True, False])
def test_absorbed_equals_expanded_equals_naive(causal):
    g = torch.Generator().manual_seed(0)
    B, T, S, H, Dn, Dr, Dc, Dv = 2, 7, 19, 3, 12, 8, 16, 10
    q_nope, q_rope = torch.randn(B, T, H, Dn, generator=g), torch.randn(B, T, H, Dr, generator=g)
    c_kv, k_rope = torch.randn(B, S, Dc, generator=g), torch.randn(B, S, Dr, generator=g)
    w_uk, w_uv = torch.randn(H, Dn, Dc, generator=g), torch.randn(H, Dv, Dc, generator=g)
    args = (q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)
    want = naive_latent_attention(*args, causal=causal, scale=0.1)
    torch.testing.assert_close(latent_attention(*args, causal=causal, scale=0.1), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(absorbed_latent_attention(*args, causal=causal, scale=0.1), want, rtol=1e-4, atol=1e-5)


def _hf_pair(rope_interleave: bool):
    """Hugging Face's DeepseekV3Attention and our mla with the same weights (random RMSNorm gains included)."""
    pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

    d_model, H = 64, 4
    cfg = DeepseekV3Config(hidden_size=d_model, num_attention_heads=H, num_key_value_heads=H, num_hidden_layers=1,
                           vocab_size=16, intermediate_size=32, moe_intermediate_size=16, n_routed_experts=4,
                           num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=1,
                           rope_interleave=rope_interleave, attention_bias=False, **SMALL)
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}  # no YaRN: no softmax scale correction
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = DeepseekV3Attention(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    ours = architectures.create_mixer("mla", d_model, H, **SMALL).eval()
    # HF's interleaved RoPE rotates pairs (2i, 2i+1) and returns them de-interleaved, which is our half-split
    # rotation of the same channels permuted (evens first): permute the RoPE rows of the two projections.
    Dr, Dn = SMALL["qk_rope_head_dim"], SMALL["qk_nope_head_dim"]
    perm = torch.cat([torch.arange(0, Dr, 2), torch.arange(1, Dr, 2)]) if rope_interleave else torch.arange(Dr)
    q_rows = torch.cat([torch.cat([h * (Dn + Dr) + torch.arange(Dn), h * (Dn + Dr) + Dn + perm]) for h in range(H)])
    kv_rows = torch.cat([torch.arange(SMALL["kv_lora_rank"]), SMALL["kv_lora_rank"] + perm])
    with torch.no_grad():
        ours.wq_a.weight.copy_(hf.q_a_proj.weight)
        ours.q_norm.weight.copy_(hf.q_a_layernorm.weight)
        ours.wq_b.weight.copy_(hf.q_b_proj.weight[q_rows])
        ours.wkv_a.weight.copy_(hf.kv_a_proj_with_mqa.weight[kv_rows])
        ours.kv_norm.weight.copy_(hf.kv_a_layernorm.weight)
        ours.wkv_b.weight.copy_(hf.kv_b_proj.weight)
        ours.wo.weight.copy_(hf.o_proj.weight)
    return hf, DeepseekV3RotaryEmbedding(cfg), ours


@pytest.mark.parametrize("rope_interleave", [False, True])
def test_matches_hugging_face_deepseek_v3_attention(rope_interleave):
    hf, rope, ours = _hf_pair(rope_interleave)  # skips without transformers (the `oracles` extra)
    from transformers.cache_utils import DynamicCache

    B, T = 2, 23
    x = torch.randn(B, T, 64)
    pos = torch.arange(T)[None].expand(B, T)
    causal = torch.full((T, T), float("-inf")).triu(1)[None, None]  # (1, 1, T, T) additive mask
    with torch.no_grad():
        want = hf(x, rope(x, pos), causal)[0]
        torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-4)
        # decoding: HF re-expands its latent cache every step; ours attends to it with the projections absorbed
        cache = DynamicCache(config=hf.config)
        hf(x[:, :9], rope(x, pos[:, :9]), causal[..., :9, :9], past_key_values=cache)
        _, state = ours.prefill(x[:, :9])
        for t in range(9, T):
            step_hf = hf(x[:, t:t + 1], rope(x, pos[:, t:t + 1]), None, past_key_values=cache)[0][:, 0]
            step_ours, state = ours.step(x[:, t], state)
            torch.testing.assert_close(step_ours, step_hf, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(step_ours, want[:, t], rtol=1e-4, atol=1e-4)


def test_cache_per_token_is_latent_plus_rope_key():
    m = make_mixer("mla")  # d_c = 24, d_rope = 8
    x = torch.randn(2, 30, m.d_model)
    with torch.no_grad():
        _, state = m.prefill(x)
        _, state2 = m.step(x[:, 0], state)
    per_token = (24 + 8) * 4
    assert measured_state_bytes(state2) - measured_state_bytes(state) == 2 * per_token  # batch of 2
    assert measured_state_bytes(state) == 2 * 30 * per_token == m.state_bytes(2, 30, torch.float32)
    assert set(state) == {"c_kv", "k_rope", "pos"} and state["c_kv"].shape == (2, 30, 24)


def test_a_step_never_expands_the_cache():
    m = architectures.create_mixer("mla", 512, 16)  # d_h = 32: d_c = 128, d_rope = 16
    S = 1000
    with torch.no_grad():
        _, state = m.prefill(torch.randn(1, S, 512))
        with LargestTensor() as largest:
            m.step(torch.randn(1, 512), state)
    expanded_keys = S * m.n_heads * m.d_nope  # what re-expanding the cache into per-head keys would create
    assert largest.numel <= (S + 1) * m.d_c < expanded_keys / 2


def test_defaults_follow_deepseeks_proportions():
    m = architectures.create_mixer("mla", 128, 4)  # the suite's size: d_h = 32
    assert (m.d_c, m.d_rope, m.d_nope, m.d_v) == (128, 16, 32, 32)
    std = architectures.create_mixer("standard", 128, 4)
    assert std.state_bytes(1, 100, torch.float32) / m.state_bytes(1, 100, torch.float32) == 256 / 144


def test_published_deepseek_v3_compression_on_the_meta_device():
    spec = architectures.get_mixer("mla").spec
    cfg = spec.published_configs["DeepSeek-V3"]
    with torch.device("meta"):
        m = architectures.create_mixer("mla", cfg.d_model, cfg.n_heads, **cfg.hparams)
        std = architectures.create_mixer("standard", cfg.n_heads * cfg.head_dim, cfg.n_heads)
    assert m.state_bytes(1, 1, torch.bfloat16) == (512 + 64) * 2
    assert std.state_bytes(1, 1, torch.bfloat16) == 2 * 128 * 128 * 2
    assert std.state_bytes(1, 4096, torch.bfloat16) / m.state_bytes(1, 4096, torch.bfloat16) == pytest.approx(56.89,
                                                                                                            abs=0.01)
