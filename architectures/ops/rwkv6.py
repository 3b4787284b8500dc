"""RWKV-6 ("Finch") time mixing, the WKV operator (Peng et al. 2024, arXiv:2404.05892, Section 4): a linear
recurrence with a matrix state per head, a data-dependent decay per key channel, and a bonus u for the current token:

    wkv_t = S_{t-1} + diag(u) k_t^T v_t            o_t = r_t wkv_t
    S_t   = diag(exp(w_t)) S_{t-1} + k_t^T v_t     (K x V per head)

so o_t = r_t (sum_{i<t} diag(prod_{i<j<t} exp(w_j)) k_i^T v_i + diag(u) k_t^T v_t). The paper writes the decay as
exp(-exp(d_t)); here ``w`` is its logarithm, w_t = -exp(d_t) <= 0 (the convention of fla's RWKV-6 ops).

Shapes: r, k, w: (B, T, H, K); v: (B, T, H, V); u: (H, K); state S: (B, H, K, V). All forms:
``(r, k, v, w, u, initial_state=None) -> (o, final_state)``, computed in fp32 (or wider), o in r's dtype.

``chunk_rwkv6`` is the chunkwise form of this gated linear recurrence (as for GLA, Yang et al. 2023,
arXiv:2312.06635). With W_t = w_1 + ... + w_t the cumulative log decay inside a chunk of length L (W_0 = 0):
  - across chunks, the state: S_end = diag(exp(W_L)) S_0 + sum_s (k_s * exp(W_L - W_s))^T v_s (a batched matrix
    product per chunk), carried by a loop over the T/L chunks that also reads it out: o_t += (r_t * exp(W_{t-1})) S_0;
  - inside a chunk, o_t += sum_{s<t} a_ts v_s + (r_t . (u * k_t)) v_t with
    a_ts = sum_k r_t[k] k_s[k] prod_{s<j<t} exp(w_j[k]). The decay differs per key channel, so a_ts is not a product
    of two matrices unless exp(W_{t-1} - W_s) is split into exp(W_{t-1}) exp(-W_s), whose second factor overflows
    for strong decays. Instead the (L x L) matrix a is built one diagonal at a time, offset t - s = 1 .. L-1, each a
    vector operation over all chunks; going from offset m to m + 1 multiplies r_t * (decay from s to t) by one more
    factor exp(w) <= 1. Every exponent is <= 0 and strong decays underflow to their correct limit, 0.
Cost per head: O(T L K / 2) elementwise for the intra-chunk scores, O(T L V + T K V) in matrix products, T/L
sequential steps on (K x V) states; memory O(T (L + K + V) + (T/L) K V) (each chunk's contribution to the state is
kept; the entering states are read out inside the loop, not stored).
"""
from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def naive_rwkv6(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor,
                initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, one token at a time, in fp32."""
    r, k, v, w, u = (t.float() for t in (r, k, v, w, u))
    B, T, H, K = r.shape
    S = r.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.float()
    o = torch.zeros_like(v)
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V): k_t^T v_t
        o[:, t] = (r[:, t, :, None, :] @ (S + u[:, :, None] * kv)).squeeze(-2)
        S = torch.exp(w[:, t])[..., None] * S + kv
    return o, S


def rwkv6_step(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor,
               initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. r, k, w: (B, H, K); v: (B, H, V); state (B, H, K, V) -> (o: (B, H, V), state)."""
    f = _compute_dtype(r)
    rf, k, v, w, u = (t.to(f) for t in (r, k, v, w, u))
    S = rf.new_zeros(*k.shape, v.shape[-1]) if initial_state is None else initial_state.to(f)
    kv = k[..., :, None] * v[..., None, :]  # (B, H, K, V)
    o = (rf[..., None, :] @ torch.addcmul(S, u[:, :, None], kv)).squeeze(-2)  # (B, H, V)
    S = torch.addcmul(kv, torch.exp(w)[..., None], S)
    return o.to(r.dtype), S


def chunk_rwkv6(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor,
                initial_state: torch.Tensor | None = None, chunk_size: int = 16
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise form of the module docstring; same result as ``naive_rwkv6``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    f = _compute_dtype(r)
    out_dtype = r.dtype
    r, k, v, w, u = (t.to(f) for t in (r, k, v, w, u))
    B, T, H, K = r.shape
    V = v.shape[-1]
    L = chunk_size
    n = -(-T // L)
    pad = n * L - T
    if pad:  # w = 0 (no decay) and k = 0 (no input) on padding: the state passes through unchanged
        r, k, v, w = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, k, v, w))

    def chunks(t: torch.Tensor) -> torch.Tensor:  # (B, n L, H, X) -> (B, n, H, L, X)
        return t.view(B, n, L, H, t.shape[-1]).transpose(2, 3)

    r, k, v, w = (chunks(t) for t in (r, k, v, w))
    W = w.cumsum(3)  # (B, n, H, L, K): W_t, inclusive
    W_before = W - w  # W_{t-1}: the decay applied to the state that position t reads

    # Intra-chunk scores a[t, s] (B, n, H, L, L): the bonus on the diagonal, then one sub-diagonal per offset m.
    a = r.new_zeros(B, n, H, L, L)
    a.diagonal(0, -2, -1).copy_((r * u[:, None, :] * k).sum(-1))
    step_decay = torch.exp(w)  # exp(w_j) in (0, 1]
    r_decayed = r[..., 1:, :]  # r_t * prod_{t-m < j < t} exp(w_j) for t = m .. L-1, here m = 1 (empty product)
    for m in range(1, L):
        if m > 1:  # one more factor, exp(w_{t-m+1}); the row t = m - 1 drops out
            r_decayed = r_decayed[..., 1:, :] * step_decay[..., 1:L - m + 1, :]
        a.diagonal(-m, -2, -1).copy_((r_decayed * k[..., :L - m, :]).sum(-1))
    o = a @ v  # (B, n, H, L, V)

    # Inter-chunk: each chunk's contribution to the state, then a loop that reads the entering state out and
    # carries it to the next chunk.
    W_end = W[..., -1:, :]  # (B, n, H, 1, K)
    chunk_states = (k * torch.exp(W_end - W)).transpose(-2, -1) @ v  # (B, n, H, K, V); exponents <= 0
    chunk_decay = torch.exp(W_end).transpose(-2, -1)  # (B, n, H, K, 1)
    r_inter = r * torch.exp(W_before)  # (B, n, H, L, K)
    S = r.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(f)
    o_inter = []  # unbind, not indexing, in the loop: its backward is one stack, not n full-size zero gradients
    for r_c, states_c, decay_c in zip(r_inter.unbind(1), chunk_states.unbind(1), chunk_decay.unbind(1)):
        o_inter.append(r_c @ S)  # (B, H, L, V)
        S = torch.addcmul(states_c, decay_c, S)
    o = o + torch.stack(o_inter, dim=1)
    o = o.transpose(2, 3).reshape(B, n * L, H, V)[:, :T]  # (B, n, H, L, V) -> (B, T, H, V)
    return o.to(out_dtype), S


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402


@register_op("rwkv6")
def make_rwkv6_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator) -> dict:
    """r, k, v Gaussian (B, T, H, D); log decays w = -exp(d) with d ~ N(-2, 1) (RWKV-6's decay range: d from -6 to
    -1 at initialisation, plus the data-dependent LoRA term); bonus u ~ N(0, 0.5^2) of shape (H, D)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    inputs = {"r": randn(B, T, H, D), "k": randn(B, T, H, D), "v": randn(B, T, H, D),
              "w": -torch.exp(randn(B, T, H, D) - 2.0), "u": 0.5 * randn(H, D)}
    return {key: t.to(device, dtype) for key, t in inputs.items()}


@register_op_impl("rwkv6", "chunk", source="ours")
def _rwkv6_chunk(inputs: dict) -> torch.Tensor:
    return chunk_rwkv6(**inputs)[0]


@register_op_impl("rwkv6", "naive", source="ours")
def _rwkv6_naive(inputs: dict) -> torch.Tensor:
    return naive_rwkv6(**inputs)[0]


def _head_first(t: torch.Tensor) -> torch.Tensor:  # (B, T, H, D) -> (B, H, T, D), fla's naive layout
    return t.transpose(1, 2)


@register_op_impl("rwkv6", "fla.naive_recurrent_rwkv6", source="fla", requires=("fla",),
                  notes="fla's recurrent PyTorch reference (head-first layout), scale=1 as in the RWKV-6 layer")
def _rwkv6_fla_recurrent(inputs: dict) -> torch.Tensor:
    from fla.ops.rwkv6.recurrent_naive import naive_recurrent_rwkv6

    r, k, v, w = (_head_first(inputs[key]) for key in ("r", "k", "v", "w"))
    return _head_first(naive_recurrent_rwkv6(r, k, v, w, inputs["u"], scale=1.0)[0])


@register_op_impl("rwkv6", "fla.naive_chunk_rwkv6", source="fla", requires=("fla",),
                  notes="fla's chunked PyTorch reference (chunk 32; T must be a multiple of 32; no scale)")
def _rwkv6_fla_chunk(inputs: dict) -> torch.Tensor:
    from fla.ops.rwkv6.chunk_naive import naive_chunk_rwkv6

    r, k, v, w = (_head_first(inputs[key]) for key in ("r", "k", "v", "w"))
    return _head_first(naive_chunk_rwkv6(r, k, v, w, inputs["u"], chunk_size=32))
