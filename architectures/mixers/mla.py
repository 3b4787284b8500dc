"""Multi-head latent attention, MLA (DeepSeek-V2 arXiv:2405.04434, DeepSeek-V3 arXiv:2412.19437; ``ops.latent_attention``
has the formulas). Keys and values are low-rank: x -> c_kv (kv_lora_rank = d_c, RMS-normalised) -> per-head keys and
values; a decoupled RoPE key (qk_rope_head_dim = d_rope) is shared by all heads, and each query head has a
non-positional part (qk_nope_head_dim) and a RoPE part. The query may be compressed too (q_lora_rank).

The forward (training, prefill) expands per-head keys and values and computes exact causal softmax attention: O(n^2 d)
time, O(n^2) memory, like ``standard``. Decoding caches only c_kv and the RoPE key, (d_c + d_rope) numbers per token
against 2 * n_heads * head_dim for ``standard``, and attends with the up-projections absorbed (W_UK into the query,
W_UV after the weighted sum of latents), never re-expanding the cache.

Defaults follow DeepSeek-V2/V3's proportions to the head size (d_c = 4 d_h, d_rope = d_h / 2, nope and value heads of
d_h, no query compression as in DeepSeek-V2-Lite), with d_h = d_model // n_heads; each can be set explicitly. The
weight layout is Hugging Face's ``DeepseekV3Attention`` (kv_b_proj rows per head: nope keys, then values), and RoPE
rotates half-split pairs (the HF model's ``rope_interleave=True`` is the same rotation after a fixed permutation of
the RoPE channels).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.latent_attention import absorbed_latent_attention, latent_attention, naive_latent_attention
from ..ops.rope import apply_rope
from ..registry import register_mixer
from ..spec import MixerSpec, Paper, ReferenceConfig

DEEPSEEK_V3 = ReferenceConfig(
    source="DeepSeek-V3 (arXiv:2412.19437, section 4.2): 128 heads of 128, d_c = 512, d_rope = 64, d_c' = 1536",
    d_model=7168, n_heads=128, head_dim=128,
    hparams={"kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
             "v_head_dim": 128},
)


@register_mixer("mla", spec=MixerSpec(
    family="softmax attention",
    paper=Paper("DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model", "2405.04434",
                2024),
    claimed_time="O(n^2 d)", claimed_memory="O(n^2)",
    time_exponent=2, memory_exponent=2, state_exponent=1,
    claim_source="guide 000, 2025 SOTA: MLA, '8x KV cache compression'; time and memory are exact attention's "
                 "(Master Comparison Table, Standard): MLA changes what is cached, not what is computed",
    modes=frozenset({"causal", "bidirectional", "decode"}),
    impls=("torch",),
    default_hparams={"kv_lora_rank": None, "q_lora_rank": None, "qk_rope_head_dim": None, "qk_nope_head_dim": None,
                     "v_head_dim": None, "rope_theta": 10000.0},
    test_hparams={"kv_lora_rank": 24, "q_lora_rank": 40, "qk_rope_head_dim": 8},
    published_configs={"DeepSeek-V3": DEEPSEEK_V3},
    notes="None = DeepSeek's proportions: kv_lora_rank 4*d_h, qk_rope_head_dim d_h/2, nope/value heads d_h "
          "(d_h = d_model/n_heads); q_lora_rank None = no query compression. Cache per token: d_c + d_rope.",
))
class MultiHeadLatentAttention(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 kv_lora_rank: int | None = None, q_lora_rank: int | None = None,
                 qk_rope_head_dim: int | None = None, qk_nope_head_dim: int | None = None,
                 v_head_dim: int | None = None, rope_theta: float | None = 10000.0):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        self.kv_lora_rank, self.q_lora_rank = kv_lora_rank, q_lora_rank
        self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim = qk_rope_head_dim, qk_nope_head_dim, v_head_dim
        self.rope_theta = rope_theta
        dh = self.head_dim
        self.d_c = kv_lora_rank if kv_lora_rank is not None else 4 * dh
        self.d_rope = qk_rope_head_dim if qk_rope_head_dim is not None else 2 * max(1, dh // 4)  # even, ~ d_h / 2
        self.d_nope = qk_nope_head_dim if qk_nope_head_dim is not None else dh
        self.d_v = v_head_dim if v_head_dim is not None else dh
        if min(self.d_c, self.d_rope, self.d_v) < 1 or self.d_nope < 0 or self.d_rope % 2:
            raise ValueError(f"need d_c, d_v >= 1 and an even d_rope >= 2; got {self.d_c}, {self.d_v}, {self.d_rope}")
        H, d_qk = n_heads, self.d_nope + self.d_rope
        if q_lora_rank is None:
            self.wq = nn.Linear(d_model, H * d_qk, bias=False)
        else:
            self.wq_a = nn.Linear(d_model, q_lora_rank, bias=False)  # W_DQ
            self.q_norm = nn.RMSNorm(q_lora_rank, eps=1e-6)
            self.wq_b = nn.Linear(q_lora_rank, H * d_qk, bias=False)  # W_UQ and W_QR, per head [nope; rope]
        self.wkv_a = nn.Linear(d_model, self.d_c + self.d_rope, bias=False)  # [W_DKV; W_KR]
        self.kv_norm = nn.RMSNorm(self.d_c, eps=1e-6)
        self.wkv_b = nn.Linear(self.d_c, H * (self.d_nope + self.d_v), bias=False)  # per head [W_UK; W_UV]
        self.wo = nn.Linear(H * self.d_v, d_model, bias=False)
        self.scale = 1.0 / math.sqrt(d_qk)

    # ---- projections --------------------------------------------------------------------------------------------
    def _w(self, m: nn.Module, fp32: bool) -> torch.Tensor:
        return m.weight.float() if fp32 else m.weight

    def _up(self, fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK: (H, d_nope, d_c) and W_UV: (H, d_v, d_c), views of wkv_b."""
        w = self._w(self.wkv_b, fp32).view(self.n_heads, self.d_nope + self.d_v, self.d_c)
        return w[:, :self.d_nope], w[:, self.d_nope:]

    def _project(self, x: torch.Tensor, start: int, fp32: bool = False):
        """x: (B, T, D) at positions start.. -> q_nope (B, T, H, d_nope), q_rope (B, T, H, d_rope) (rotated),
        c_kv (B, T, d_c) (normalised), k_rope (B, T, d_rope) (rotated)."""
        B, T, _ = x.shape
        x = x.float() if fp32 else x
        if self.q_lora_rank is None:
            q = F.linear(x, self._w(self.wq, fp32))
        else:
            cq = F.rms_norm(F.linear(x, self._w(self.wq_a, fp32)), (self.q_lora_rank,), self._w(self.q_norm, fp32),
                            eps=1e-6)
            q = F.linear(cq, self._w(self.wq_b, fp32))
        q = q.view(B, T, self.n_heads, self.d_nope + self.d_rope)  # (B, T, H, d_nope + d_rope)
        q_nope, q_rope = q.split([self.d_nope, self.d_rope], dim=-1)
        kv = F.linear(x, self._w(self.wkv_a, fp32))  # (B, T, d_c + d_rope)
        c_kv, k_rope = kv.split([self.d_c, self.d_rope], dim=-1)
        c_kv = F.rms_norm(c_kv, (self.d_c,), self._w(self.kv_norm, fp32), eps=1e-6)
        positions = torch.arange(start, start + T, device=x.device)
        if self.rope_theta is not None:  # None: NoPE (Kimi Linear's MLA layers; its KDA layers carry order)
            q_rope = apply_rope(q_rope, positions, self.rope_theta)
            k_rope = apply_rope(k_rope[:, :, None], positions, self.rope_theta)[:, :, 0]  # one head shared by all
        else:  # a copy: the slice of kv would keep all of kv's storage alive in the decode cache
            k_rope = k_rope.contiguous()
        return q_nope, q_rope, c_kv, k_rope

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        o = o.reshape(*o.shape[:2], self.n_heads * self.d_v)  # (B, T, H, d_v) -> (B, T, H*d_v)
        return F.linear(o, self._w(self.wo, fp32))

    # ---- the contract -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(latent_attention(*self._project(x, 0), *self._up(), causal=self.causal, scale=self.scale))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        q_nope, q_rope, c_kv, k_rope = self._project(x, 0)
        o = latent_attention(q_nope, q_rope, c_kv, k_rope, *self._up(), causal=self.causal, scale=self.scale)
        return self._out(o), {"c_kv": c_kv, "k_rope": k_rope, "pos": x.shape[1]}

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"c_kv": torch.zeros(batch, 0, self.d_c, **kw), "k_rope": torch.zeros(batch, 0, self.d_rope, **kw),
                "pos": 0}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        q_nope, q_rope, c_kv, k_rope = self._project(x_t[:, None, :], state["pos"])
        c_kv = torch.cat([state["c_kv"], c_kv], dim=1)  # (B, S, d_c): the latent cache
        k_rope = torch.cat([state["k_rope"], k_rope], dim=1)  # (B, S, d_rope)
        o = absorbed_latent_attention(q_nope, q_rope, c_kv, k_rope, *self._up(), causal=True, scale=self.scale)
        return self._out(o)[:, 0], {"c_kv": c_kv, "k_rope": k_rope, "pos": state["pos"] + 1}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * seq_len * (self.d_c + self.d_rope) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        q_nope, q_rope, c_kv, k_rope = self._project(x, 0, fp32=True)
        o = naive_latent_attention(q_nope, q_rope, c_kv, k_rope, *self._up(fp32=True), causal=self.causal,
                                   scale=self.scale)
        return self._out(o, fp32=True)
