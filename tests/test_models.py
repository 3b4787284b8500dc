"""The model zoo: every registered preset (parametrized over the registry, so registering one enrols it) builds its
tiny flavour, runs forward, decodes step by step exactly as the forward pass, is causal; the MoE block routes to k
experts, balances, drops by capacity; full-size parameter counts (meta device) match the published figures."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from architectures.mixer import measured_state_bytes
from architectures.models import MODELS, ModelPreset, build_model, get_model, list_models, register_model
from architectures.models.decoder import CausalLM, DecoderConfig
from architectures.models.layer_pattern import expand
from architectures.models.moe import MoE
from architectures.registry import DuplicateNameError, UnknownNameError

T, SPLIT = 29, 17  # odd length, past every tiny flavour's chunk (16), window (8) and segment (16); prefill SPLIT
FROM_ZERO = 6  # tokens decoded from init_state (the rest of the sequence is covered by prefill + steps)


def decoder_presets() -> list[str]:
    return [n for n in list_models() if get_model(n).kind == "decoder"]


def tiny(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, "tiny", dtype=dtype).eval()


def tokens(cfg: DecoderConfig, batch: int = 2, length: int = T) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))


# ---- the checks, as functions: the parametrized tests and the enrolment test call them -------------------------------
def check_forward(name: str) -> None:
    model = tiny(name)
    x = tokens(model.cfg)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, T, model.cfg.vocab_size)
    assert torch.isfinite(logits).all()


def check_decode_equals_forward(name: str, dtype: torch.dtype = torch.float32, tol: float = 1e-4) -> None:
    """prefill(first SPLIT tokens) + one step per remaining token == forward, and so do T steps from init_state;
    the state's size is what state_bytes says."""
    model = tiny(name, dtype)
    x = tokens(model.cfg)
    with torch.no_grad():
        full = model(x)
        logits, state = model.prefill(x[:, :SPLIT])
        assert measured_state_bytes(state) == model.state_bytes(2, SPLIT, dtype)
        steps = [logits]
        for t in range(SPLIT, T):
            out, state = model.step(x[:, t], state)
            steps.append(out[:, None])
        assert state["pos"] == T and measured_state_bytes(state) == model.state_bytes(2, T, dtype)
        state, from_zero = model.init_state(2), []
        for t in range(FROM_ZERO):
            out, state = model.step(x[:, t], state)
            from_zero.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=tol, atol=tol)
    torch.testing.assert_close(torch.stack(from_zero, 1), full[:, :FROM_ZERO], rtol=tol, atol=tol)


def check_causal(name: str, dtype: torch.dtype = torch.float32) -> None:
    """Changing tokens from position t on leaves the logits before t unchanged: bit-identical for dense models.
    In an MoE layer each expert multiplies the tokens routed to it as one batch, so other tokens (later ones too)
    change the batch's row count and with it the matmul's blocking and rounding (measured: <= 1e-7 in fp32); no
    information flows, the routing of earlier tokens is identical, and the tolerance is far below any real leak."""
    model = tiny(name, dtype)
    x = tokens(model.cfg)
    y = x.clone()
    y[:, SPLIT:] = (y[:, SPLIT:] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        a, b = model(x), model(y)
    if "moe" in model.cfg.layer_ffns():
        tol = 1e-6 if dtype == torch.float32 else 0.0 if dtype == torch.float64 else 2e-2
        torch.testing.assert_close(a[:, :SPLIT], b[:, :SPLIT], rtol=0, atol=tol)
    else:
        assert torch.equal(a[:, :SPLIT], b[:, :SPLIT])
    assert not torch.equal(a[:, SPLIT:], b[:, SPLIT:])


# ---- registry -----------------------------------------------------------------------------------------------------
def test_registry_lists_the_decoder_families():
    families = {get_model(n).family for n in decoder_presets()}
    assert {"GPT", "LLaMA", "Mistral", "Mixtral", "DeepSeek", "Jamba", "Kimi Linear", "PaLM", "Mamba", "RWKV",
            "RetNet", "Transformer-XL"} <= families
    assert list_models("llama*") == ["llama2-7b", "llama3-8b"]
    with pytest.raises(UnknownNameError, match="did you mean 'llama2-7b'"):
        get_model("llama2-7")


def test_duplicate_model_name_raises():
    with pytest.raises(DuplicateNameError):
        register_model("gpt2")(lambda: get_model("gpt2"))


def test_registering_a_preset_enrols_it_in_the_registry_wide_tests():
    base = get_model("llama2-7b")
    tiny_cfg = dataclasses.replace(base.tiny, n_layers=1, mixers=("standard",), mixer_hparams={})

    @register_model("throwaway-test-lm")
    def throwaway() -> ModelPreset:
        return dataclasses.replace(base, family="Throwaway", full=tiny_cfg, tiny=tiny_cfg, published={})

    try:
        assert "throwaway-test-lm" in decoder_presets()  # what the parametrized tests below iterate over
        check_forward("throwaway-test-lm")
        check_decode_equals_forward("throwaway-test-lm")
        check_causal("throwaway-test-lm")
        assert get_model("throwaway-test-lm").name == "throwaway-test-lm"
    finally:
        MODELS.unregister("throwaway-test-lm")


def test_layer_pattern_expands_cyclically_after_a_prefix():
    assert expand(("kda", "kda", "kda", "mla"), 8) == ["kda", "kda", "kda", "mla"] * 2
    assert expand(("moe",), 5, first=("dense",) * 3) == ["dense"] * 3 + ["moe"] * 2
    jamba = build_model("jamba-v0.1", "full", device="meta")
    kinds = [type(layer.mixer).__name__ for layer in jamba.layers]
    assert kinds.count("GroupedQueryAttention") == 4 and kinds[4] == kinds[12] == "GroupedQueryAttention"
    assert [isinstance(layer.ffn, MoE) for layer in jamba.layers] == [i % 2 == 1 for i in range(32)]
    kimi = get_model("kimi-linear-48b-a3b").full.layer_mixers()
    assert [i + 1 for i, m in enumerate(kimi) if m == "mla"] == [4, 8, 12, 16, 20, 24, 27]
    assert kimi.count("kda") == 20


# ---- every tiny flavour -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", decoder_presets())
def test_tiny_forward(name):
    check_forward(name)


@pytest.mark.parametrize("name", decoder_presets())
def test_tiny_decode_equals_forward(name):
    check_decode_equals_forward(name)


@pytest.mark.parametrize("name", decoder_presets())
def test_tiny_is_causal(name):
    check_causal(name)


@pytest.mark.parametrize("name", decoder_presets())
def test_tiny_is_causal_in_bf16(name):
    check_causal(name, torch.bfloat16)


@pytest.mark.parametrize("name", ["llama3-8b", "deepseek-v3"])
def test_tiny_decode_equals_forward_in_fp64(name):
    check_decode_equals_forward(name, torch.float64, tol=1e-10)


@pytest.mark.parametrize("name", decoder_presets())
def test_tiny_flavour_is_cpu_sized_and_from_the_same_code(name):
    p = get_model(name)
    assert 64 <= p.tiny.d_model <= 256 and p.tiny.n_layers <= 8
    assert type(p.tiny) is type(p.full)
    assert set(p.tiny.layer_mixers()) == set(p.full.layer_mixers())
    assert set(p.tiny.layer_ffns()) == set(p.full.layer_ffns())


# ---- MoE ------------------------------------------------------------------------------------------------------------
def make_moe(**kw) -> MoE:
    torch.manual_seed(0)
    args = dict(d_model=32, d_expert=24, n_experts=8, top_k=2)
    args.update(kw)
    return MoE(**args)


def moe_oracle(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token: sum over the selected experts of weight * SwiGLU expert, plus the shared MLP."""
    _, weights, idx = moe.router(x)
    out = []
    for n in range(x.shape[0]):
        y = moe.shared(x[n]) if moe.shared is not None else torch.zeros_like(x[n])
        for w, e in zip(weights[n], idx[n]):
            h = torch.nn.functional.silu(moe.w_gate[e] @ x[n]) * (moe.w_up[e] @ x[n])
            y = y + w * (moe.w_down[e] @ h)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("kw", [{}, {"norm_topk": False}, {"n_shared": 1},
                                {"score": "sigmoid", "routed_scale": 2.5, "n_groups": 4, "topk_groups": 2,
                                 "score_bias": True}])
def test_moe_routes_each_token_to_k_distinct_experts_and_sums_them(kw):
    moe = make_moe(**kw)
    x = torch.randn(29, 32)
    probs, weights, idx = moe.router(x)
    assert idx.shape == (29, 2) and (idx[:, 0] != idx[:, 1]).all()
    if kw.get("norm_topk", True):
        torch.testing.assert_close(weights.sum(-1), torch.full((29,), kw.get("routed_scale", 1.0)))
    torch.testing.assert_close(moe(x), moe_oracle(moe, x), rtol=1e-5, atol=1e-6)
    assert moe.inactive_params() == 6 * 3 * 32 * 24


def test_group_limited_routing_stays_in_the_best_groups():
    moe = make_moe(score="sigmoid", n_groups=4, topk_groups=1, score_bias=True, top_k=2)
    x = torch.randn(50, 32)
    _, _, idx = moe.router(x)
    assert (idx[:, 0] // 2 == idx[:, 1] // 2).all(), "with one group of 2 allowed, both picks are in it"
    moe.router.score_bias[:] = torch.tensor([0, 0, 0, 0, 0, 0, 5.0, 5.0])  # the bias steers selection only
    probs, weights, idx = moe.router(x)
    assert (idx.sort(-1)[0] == torch.tensor([6, 7])).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))


def test_load_balancing_loss():
    moe = make_moe(n_experts=4)
    x = torch.randn(64, 32)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform probabilities: the loss is 1 whatever the choice
    moe(x)
    torch.testing.assert_close(moe.aux_loss, torch.tensor(1.0))
    with torch.no_grad():
        moe.router.weight.normal_()
    moe(x)
    probs, _, idx = moe.router(x)
    f = torch.stack([(idx == e).float().sum() for e in range(4)]) / idx.numel()
    torch.testing.assert_close(moe.aux_loss, 4 * (f * probs.mean(0)).sum())
    with torch.no_grad():  # collapse: every token to experts 0 and 1 with p 1/2 each -> E * (1/2 * 1/2 * 2) = E / 2
        moe.router.weight.zero_()
        moe.router.weight[:2, 0] = 100.0
    moe(x.abs() + 1)
    torch.testing.assert_close(moe.aux_loss, torch.tensor(2.0))


def test_capacity_drops_assignments_past_each_experts_capacity_in_token_order():
    moe = make_moe(n_experts=4, capacity_factor=1.0)
    x = torch.randn(16, 32).abs() + 1
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:2, 0] = 100.0  # all 16 tokens want experts 0 and 1
    assert moe.capacity(16) == 8  # ceil(1.0 * 16 * 2 / 4)
    y = moe(x)
    assert moe.dropped_fraction == 0.5
    free = make_moe(n_experts=4)
    free.load_state_dict(moe.state_dict())
    expected = free(x)
    torch.testing.assert_close(y[:8], expected[:8])  # the first 8 tokens fit
    assert torch.equal(y[8:], torch.zeros_like(y[8:]))  # the others got nothing (the residual carries them)


def test_dense_models_have_no_aux_loss_and_moe_models_do():
    assert tiny("llama2-7b").aux_loss.item() == 0.0
    model = tiny("mixtral-8x7b").train()
    model(tokens(model.cfg)).sum().backward()
    assert model.aux_loss.item() > 0
    assert model.layers[0].ffn.router.weight.grad is not None


# ---- full-size figures on the meta device ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_counts() -> dict[str, tuple[int, int]]:
    counts = {}
    for name in decoder_presets():
        model = build_model(name, "full", device="meta")
        assert all(p.is_meta for p in model.parameters()), "no memory for weights"
        counts[name] = (model.num_params(), model.active_params())
    return counts


# Published figures our full-size module does not reproduce within 0.5%, and why. Each of these models' counts
# equals transformers' own class for the same config exactly (tests/test_models_hf.py) where transformers has it:
# the published numbers are rounded labels or follow another convention. Pinned: (figure, our / published).
PUBLISHED_DIFFERENCES = {
    # "37B activated": ours counts the embedding and the head (as Mixtral's 12.9B does): 37.55B; without the
    # input embedding (a lookup, no multiply) 36.63B. The paper does not say which; the label is rounded.
    ("deepseek-v3", "active_params"): 37.552 / 37,
    # Jamba's "52B total, 12B active" are rounded: 51.57B, 12.11B (transformers' JambaForCausalLM: 51.57B too)
    ("jamba-v0.1", "params"): 51.570 / 52,
    ("jamba-v0.1", "active_params"): 12.1103 / 12,
    # "Kimi-Linear-48B-A3B" is a name: the checkpoint has 49.12B parameters (transformers' count too) and 3.48B
    # activated with embedding and head (2.73B without either, 3.11B without the input embedding only)
    ("kimi-linear-48b-a3b", "params"): 49.123 / 48,
    ("kimi-linear-48b-a3b", "active_params"): 3.4845 / 3,
    # "Mamba-2.8B" is a name: 2.768B parameters (transformers' MambaForCausalLM: the same)
    ("mamba-2.8b", "params"): 2.7683 / 2.8,
    # RetNet's paper does not publish its vocabulary; with 50257 untied the blocks' 6.44B + embeddings give 6.86B
    ("retnet-6.7b", "params"): 6.8552 / 6.7,
}


@pytest.mark.parametrize("name", decoder_presets())
def test_full_size_counts_match_the_published_figures(name, full_counts):
    total, active = full_counts[name]
    ours = {"params": total, "active_params": active}
    assert get_model(name).published, f"{name} has no published figure"
    for figure, published in get_model(name).published.items():
        ratio = ours[figure] / published
        if (name, figure) in PUBLISHED_DIFFERENCES:
            assert ratio == pytest.approx(PUBLISHED_DIFFERENCES[name, figure], rel=1e-3), (name, figure, ours[figure])
        else:
            assert abs(ratio - 1) <= 0.005, f"{name} {figure}: ours {ours[figure]:,} vs published {published:,.0f}"


def test_exact_counts_of_reference_models(full_counts):
    # transformers' counts of the same configs (tests/test_models_hf.py checks them live when transformers is there)
    assert full_counts["llama2-7b"] == (6_738_415_616, 6_738_415_616)
    assert full_counts["gpt2"][0] == 124_439_808
    assert full_counts["mixtral-8x7b"] == (46_702_792_704, 12_879_925_248)
    assert full_counts["deepseek-v3"][0] == 671_026_404_352


def test_state_bytes_of_full_size_models_on_the_meta_device():
    llama = build_model("llama2-7b", "full", device="meta")
    assert llama.state_bytes(1, 4096, torch.float16) == 2 * 32 * 4096 * 4096 * 2  # 2 GiB: K and V, 32 layers
    mistral = build_model("mistral-7b", "full", device="meta")
    assert mistral.state_bytes(1, 32768, torch.float16) == 2 * 32 * 4095 * 8 * 128 * 2  # the window caps it
    assert isinstance(llama, CausalLM)


def test_cli_lists_models_with_family_paper_and_counts(capsys):
    from harness.cli import main

    assert main(["list", "models", "mixtral*"]) == 0
    out = capsys.readouterr().out
    assert "mixtral-8x7b" in out and "Mixtral" in out and "arXiv:2401.04088" in out
    assert "46.70B" in out and "12.88B" in out and "active 12.90B" in out


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3", "mistral-7b", "llama2-7b"])
def test_full_size_forward_runs_on_meta_and_costs_two_flops_per_active_weight(name):
    """FLOPs of the real forward on the meta device (no memory): at a short context a token costs ~2 FLOPs per
    active weight (the input embedding is a lookup: no FLOPs); MoE layers route balanced on meta, k experts/token."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, "full", device="meta")
    with FlopCounterMode(display=False) as counter:
        logits = model(torch.zeros(1, 64, dtype=torch.long, device="meta"))
    assert logits.shape == (1, 64, model.cfg.vocab_size)
    per_token = counter.get_total_flops() / 64
    matmul_weights = model.active_params() - model.embed.weight.numel()
    assert 1.0 <= per_token / (2 * matmul_weights) < 1.02  # the rest: attention scores over 64 tokens
