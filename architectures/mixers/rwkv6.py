"""RWKV-6 "Finch" time mixing (Peng et al. 2024, "Eagle and Finch", arXiv:2404.05892, Section 4), as the mixer; the
channel mixing of an RWKV block is the backbone's FFN. With x_{t-1} the previous token (token shift):

    lerp(a, b, mu)   = a + (b - a) * mu
    lora(x; l, A, B) = l + tanh(x A) B
    ddlerp_*(a, b)   = a + (b - a) * lora_*(a + (b - a) * mu_x)           data-dependent linear interpolation
    r, k, v = ddlerp_{r,k,v}(x_t, x_{t-1}) W_{r,k,v}     g = SiLU(ddlerp_g(x_t, x_{t-1}) W_g)
    d_t = lora_d(ddlerp_w(x_t, x_{t-1}))                  w_t = exp(-exp(d_t)), the data-dependent decay per channel
    wkv = WKV(r, k, v, log w = -exp(d), u)                per head, ``ops.rwkv6`` (bonus u for the current token)
    out = W_o (GroupNorm_heads(wkv) * g)

The five ddlerp LoRAs share their first matrix (D x 5R, "time_maa_w1") as in the reference code (RWKV-LM, x060); the
decay LoRA has its own (rank ``decay_rank``). Heads: ``n_heads`` heads of size K = d_model / n_heads (the paper uses
K = 64). The decode state is the previous token (for the shift) and one (K x K) WKV state per head: constant in n.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer, State
from ..ops.rwkv6 import chunk_rwkv6, naive_rwkv6, rwkv6_step
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


@register_mixer("rwkv6", spec=MixerSpec(
    family="linear RNN",
    paper=Paper("Eagle and Finch: RWKV with Matrix-Valued States and Dynamic Recurrence", "2404.05892", 2024),
    claimed_time="O(n)", claimed_memory="O(n)",
    time_exponent=1, memory_exponent=1, state_exponent=0,
    claimed_quality=None,
    claim_source="the paper (guide 003 lists RWKV, 'linear attention RNN', in its family tree and 'Mamba, RWKV: "
                 "linear complexity, good for long sequences' in its Quick Comparison, without a table row): "
                 "training parallel over time and linear in length, RNN inference with a constant-size state",
    modes=frozenset({"causal", "decode"}),
    impls=("torch", "fla"),
    default_hparams={"mix_rank": 32, "decay_rank": 64, "chunk_size": 16},
    test_hparams={"mix_rank": 8, "decay_rank": 8, "chunk_size": 16},
    notes="Time mixing only (the channel mixing is the backbone's FFN). Initialisation follows RWKV-LM's x060 for a "
          "middle layer (ratio_0_to_1 = ratio_1_to_almost0 = 0.5), except that the first LoRA matrices are small "
          "random instead of zero so the data-dependent paths are live from the start. impl 'fla' runs fla's "
          "Triton chunk_rwkv6 (CUDA only).",
))
class RWKV6(Mixer):
    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 mix_rank: int = 32, decay_rank: int = 64, chunk_size: int = 16):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if min(mix_rank, decay_rank, chunk_size) < 1:
            raise ValueError("mix_rank, decay_rank and chunk_size must be >= 1")
        self.mix_rank, self.decay_rank, self.chunk_size = mix_rank, decay_rank, chunk_size
        D, H, K = d_model, n_heads, self.head_dim
        ratio_0_to_1, ratio_1_to_almost0 = 0.5, 0.5  # a middle layer of RWKV-LM's depth-dependent initialisation
        ddd = torch.arange(D, dtype=torch.float32) / D
        self.mu_x = nn.Parameter(1.0 - ddd ** ratio_1_to_almost0)
        self.mu = nn.Parameter(torch.stack([  # lambda of the five ddlerp LoRAs, in the order w, k, v, r, g
            1.0 - ddd ** ratio_1_to_almost0,
            1.0 - ddd ** ratio_1_to_almost0,
            1.0 - (ddd ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1),
            1.0 - ddd ** (0.5 * ratio_1_to_almost0),
            1.0 - ddd ** (0.5 * ratio_1_to_almost0)]))  # (5, D)
        self.mix_w1 = nn.Parameter(torch.empty(D, 5 * mix_rank).uniform_(-1e-2, 1e-2))
        self.mix_w2 = nn.Parameter(torch.empty(5, mix_rank, D).uniform_(-1e-2, 1e-2))
        n = torch.arange(D, dtype=torch.float32)
        self.decay = nn.Parameter(-6.0 + 5.0 * (n / max(D - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1))  # d: w in (0, 1)
        self.decay_w1 = nn.Parameter(torch.empty(D, decay_rank).uniform_(-1e-2, 1e-2))
        self.decay_w2 = nn.Parameter(torch.empty(decay_rank, D).uniform_(-1e-2, 1e-2))
        bonus = ratio_0_to_1 * (1.0 - n / max(D - 1, 1)) + ((n + 1) % 3 - 1) * 0.1
        self.bonus = nn.Parameter(bonus.view(H, K))  # u
        self.wr, self.wk = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.wv, self.wg = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.ln_x = nn.GroupNorm(H, D, eps=1e-5 * 8 ** 2)  # RWKV-LM: eps = 1e-5 * head_size_divisor^2
        self.wo = nn.Linear(D, D, bias=False)

    @classmethod
    def unavailable_reason(cls, impl: str, device: torch.device, dtype: torch.dtype) -> str | None:
        if impl == "fla":
            if importlib.util.find_spec("fla") is None:
                return "flash-linear-attention (fla) not installed"
            if device.type != "cuda":
                return f"fla's Triton kernels need CUDA (device is {device.type})"
        return None

    # ---- the layer --------------------------------------------------------------------------------------------
    @staticmethod
    def _w(p: torch.Tensor, fp32: bool) -> torch.Tensor:
        return p.float() if fp32 else p

    def _features(self, x: torch.Tensor, prev: torch.Tensor, fp32: bool):
        """x: (B, T, D), prev: (B, D) the token before x[:, 0] -> r, k, w (log decay), v: (B, T, H, K); g: (B, T, D)."""
        w_ = lambda p: self._w(p, fp32)  # noqa: E731
        B, T, D = x.shape
        shifted = torch.cat([prev[:, None].to(x.dtype), x[:, :-1]], dim=1)  # x_{t-1}
        xx = shifted - x
        xxx = x + xx * w_(self.mu_x)
        lora = torch.tanh(xxx @ w_(self.mix_w1)).view(B, T, 5, self.mix_rank)  # (B, T, 5, R)
        lora = torch.einsum("btir,ird->btid", lora, w_(self.mix_w2))  # (B, T, 5, D)
        xw, xk, xv, xr, xg = (x + xx * (w_(self.mu)[i] + lora[:, :, i]) for i in range(5))
        shape = (B, T, self.n_heads, self.head_dim)
        r = F.linear(xr, w_(self.wr.weight)).view(shape)
        k = F.linear(xk, w_(self.wk.weight)).view(shape)
        v = F.linear(xv, w_(self.wv.weight)).view(shape)
        g = F.silu(F.linear(xg, w_(self.wg.weight)))
        d = w_(self.decay) + torch.tanh(xw @ w_(self.decay_w1)) @ w_(self.decay_w2)  # (B, T, D)
        w = -torch.exp(d.to(torch.promote_types(d.dtype, torch.float32))).view(shape)  # log of exp(-exp(d))
        return r, k, v, w, g

    def _out(self, o: torch.Tensor, g: torch.Tensor, fp32: bool) -> torch.Tensor:
        """o: (B, T, H, K) -> GroupNorm per head, gate, output projection -> (B, T, D)."""
        B, T = o.shape[:2]
        o = F.group_norm(o.reshape(B * T, self.d_model), self.n_heads, self._w(self.ln_x.weight, fp32),
                         self._w(self.ln_x.bias, fp32), self.ln_x.eps).view(B, T, self.d_model)
        return F.linear(o * g, self._w(self.wo.weight, fp32))

    def _run(self, x: torch.Tensor, state: State | None, wkv, fp32: bool = False) -> tuple[torch.Tensor, State]:
        if fp32:
            x = x.float()
        prev = state["shift"] if state else x.new_zeros(x.shape[0], self.d_model)
        r, k, v, w, g = self._features(x, prev, fp32)
        o, S = wkv(r, k, v, w, self._w(self.bonus, fp32), initial_state=state["wkv"] if state else None)
        return self._out(o, g, fp32), {"shift": x[:, -1].clone(), "wkv": S.to(x.dtype)}

    def _fast_wkv(self, r, k, v, w, u, initial_state=None):
        if self.impl == "fla":
            from fla.ops.rwkv6 import chunk_rwkv6 as fla_chunk_rwkv6

            o, S = fla_chunk_rwkv6(r, k, v, w, u, scale=1.0, initial_state=initial_state, output_final_state=True)
            return o, S
        return chunk_rwkv6(r, k, v, w, u, initial_state=initial_state, chunk_size=self.chunk_size)

    # ---- the contract -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefill(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self._run(x, None, self._fast_wkv)

    def init_state(self, batch: int) -> State:
        kw = dict(device=self._device, dtype=self._dtype)
        return {"shift": torch.zeros(batch, self.d_model, **kw),
                "wkv": torch.zeros(batch, self.n_heads, self.head_dim, self.head_dim, **kw)}

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        r, k, v, w, g = (t[:, 0] for t in self._features(x_t[:, None], state["shift"], fp32=False))
        o, S = rwkv6_step(r, k, v, w, self.bonus, initial_state=state["wkv"])  # (B, H, K)
        y = self._out(o[:, None], g[:, None], fp32=False)[:, 0]
        return y, {"shift": x_t.clone(), "wkv": S.to(x_t.dtype)}

    def state_bytes(self, batch: int, seq_len: int, dtype: torch.dtype) -> int:
        return batch * (self.d_model + self.n_heads * self.head_dim * self.head_dim) * dtype.itemsize

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, naive_rwkv6, fp32=True)[0]
