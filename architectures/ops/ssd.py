"""Mamba-2's state space duality (SSD) layer (Dao & Gu 2024, arXiv:2405.21060, Sections 3-7): a selective SSM whose
A is a scalar per head, so the decay between two positions is one number and the sequence map is a masked
(semiseparable) matrix. Per head h (head dim P, state N; B and C are shared by the heads of a group):

    h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) B_t^T      (P, N)
    y_t = h_t C_t + D x_t

Shapes: x: (batch, T, H, P); dt: (batch, T, H) (after softplus); A: (H,) (negative); B, C: (batch, T, G, N) with
H % G == 0; D: (H,) or None; state: (batch, H, P, N). All forms: ``(x, dt, A, B, C, D=None, initial_state=None)
-> (y, final_state)``, computed in fp32 (or wider); y in x's dtype, the state in the compute dtype.

``chunk_ssd`` is the paper's chunked algorithm (Section 6, "ssd_minimal"): with a_t = dt_t A (log decays, <= 0) and
chunks of length L,
  1. intra-chunk (the diagonal blocks): Y = (C B^T  *  exp(segsum(a))) (dt x), a masked (L x L) matrix product;
     segsum(a)[t, s] = a_{s+1} + ... + a_t for s <= t (-inf above the diagonal), summed directly (not as a
     difference of cumulative sums), so every exponent is <= 0;
  2. each chunk's state from a zero start: sum_s exp(a_{s+1} + ... + a_end) (dt_s x_s) B_s^T;
  3. the states entering each chunk, by a loop over the T/L chunks (the paper's inter-chunk recurrence);
  4. the off-diagonal blocks: y_t += exp(a_start + ... + a_t) h_entering C_t.
Cost: O(T L (N + P) + T N P) time per head, all of it batched matrix products; memory O(T L + (T/L) N P) per head.
"""
from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _heads(t: torch.Tensor, H: int) -> torch.Tensor:
    """(batch, T, G, N) -> (batch, T, H, N): each group's B (or C) repeated for its H / G heads."""
    G = t.shape[2]
    if H % G:
        raise ValueError(f"{H} heads cannot be split into {G} groups")
    return t.repeat_interleave(H // G, dim=2)


def naive_ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, one token at a time, in fp32."""
    x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
    batch, T, H, P = x.shape
    B, C = _heads(B, H), _heads(C, H)  # (batch, T, H, N)
    h = x.new_zeros(batch, H, P, B.shape[-1]) if initial_state is None else initial_state.float()
    y = torch.zeros_like(x)
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)  # (batch, H): one number per head
        h = decay[:, :, None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        y[:, t] = (h * C[:, t, :, None, :]).sum(-1)
    if D is not None:
        y = y + x * D.float()[:, None]
    return y, h


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. x: (batch, H, P); dt: (batch, H); B, C: (batch, G, N) -> (y: (batch, H, P), state)."""
    f = _compute_dtype(x)
    xf, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    batch, H, P = xf.shape
    B, C = _heads(B[:, None], H)[:, 0], _heads(C[:, None], H)[:, 0]  # (batch, H, N)
    h = xf.new_zeros(batch, H, P, B.shape[-1]) if initial_state is None else initial_state.to(f)
    h = torch.addcmul((dt[..., None] * xf)[..., None] * B[:, :, None, :], torch.exp(dt * A)[..., None, None], h)
    y = (h @ C[..., None]).squeeze(-1)  # (batch, H, P)
    if D is not None:
        y = y + xf * D.to(f)[:, None]
    return y.to(x.dtype), h


def segsum(a: torch.Tensor) -> torch.Tensor:
    """a: (..., L) -> (..., L, L) with [t, s] = a_{s+1} + ... + a_t for s <= t and -inf for s > t.

    Summed over the masked terms (as in the paper's ssd_minimal) rather than as cumsum_t - cumsum_s, which would
    cancel large numbers."""
    L = a.shape[-1]
    ones = torch.ones(L, L, dtype=torch.bool, device=a.device)
    terms = a[..., None, :].expand(*a.shape[:-1], L, L)  # (..., L, L): [s, j] = a_j
    terms = terms.masked_fill(~ones.triu(1), 0.0)  # keep a_j for j > s
    sums = terms.cumsum(-1).transpose(-2, -1)  # [t, s] = sum over s < j <= t of a_j
    return sums.masked_fill(~ones.tril(), float("-inf"))


def chunk_ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None, chunk_size: int = 32
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked SSD algorithm of the module docstring; same result as ``naive_ssd``.

    Heads are split as (G groups, Hg = H / G heads per group). B and C are shared inside a group, so the matrix
    products that involve them take the heads of a group as extra columns, (Hg * P), instead of repeating B and C."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    f = _compute_dtype(x)
    out_dtype = x.dtype
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    batch, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if H % G:
        raise ValueError(f"{H} heads cannot be split into {G} groups")
    Hg = H // G
    L = chunk_size
    n = -(-T // L)
    pad = n * L - T
    x_dt = x * dt[..., None]  # (batch, T, H, P): dt_t x_t
    a = dt * A  # (batch, T, H): log decays a_t = dt_t A <= 0
    if pad:  # a = 0 and no input on padding: the state passes through unchanged
        x_dt, B, C = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x_dt, B, C))
        a = torch.nn.functional.pad(a, (0, 0, 0, pad))
    x_dt = x_dt.view(batch, n, L, G, Hg, P)
    B = B.view(batch, n, L, G, N).permute(0, 3, 1, 2, 4)  # (batch, G, n, L, N)
    C = C.view(batch, n, L, G, N).permute(0, 3, 1, 2, 4)
    a = a.view(batch, n, L, G, Hg).permute(0, 3, 4, 1, 2)  # (batch, G, Hg, n, L)
    a_cum = a.cumsum(-1)  # a_1 + ... + a_t within each chunk

    def per_position(t: torch.Tensor) -> torch.Tensor:  # (batch, G, Hg, n, L) -> (batch, G, n, L, Hg, 1)
        return t.permute(0, 1, 3, 4, 2)[..., None]

    # 1. Diagonal blocks: the masked (L x L) product, per head.
    scores = C @ B.transpose(-2, -1)  # (batch, G, n, L, L): C_t . B_s, shared by the heads of a group
    weights = scores[:, :, None] * torch.exp(segsum(a))  # (batch, G, Hg, n, L, L)
    y_diag = weights @ x_dt.permute(0, 3, 4, 1, 2, 5)  # (batch, G, Hg, n, L, P)
    # 2. Each chunk's final state from a zero start, stored transposed as (N, Hg * P) per group:
    #    sum_s exp(a_{s+1} + ... + a_end) B_s^T (dt_s x_s). The exponent, a difference of two sums of at most L
    #    non-positive terms of one chunk, is <= 0 up to rounding.
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (batch, G, Hg, n, L)
    x_w = (x_dt * per_position(to_end).permute(0, 2, 3, 1, 4, 5))  # (batch, n, L, G, Hg, P)
    x_w = x_w.permute(0, 3, 1, 2, 4, 5).reshape(batch, G, n, L, Hg * P)
    chunk_states = (B.transpose(-2, -1) @ x_w).view(batch, G, n, N, Hg, P)
    # 3. States entering each chunk: a loop over the chunks; the state is kept as (batch, G, N, Hg, P).
    chunk_decay = torch.exp(a_cum[..., -1]).permute(0, 1, 3, 2)[:, :, :, None, :, None]  # (batch, G, n, 1, Hg, 1)
    if initial_state is None:
        state = x.new_zeros(batch, G, N, Hg, P)
    else:  # (batch, H, P, N) -> (batch, G, N, Hg, P)
        state = initial_state.to(f).view(batch, G, Hg, P, N).permute(0, 1, 4, 2, 3)
    entering = []  # unbind, not indexing, in the loop: its backward is one stack, not n full-size zero gradients
    for states_k, decay_k in zip(chunk_states.unbind(2), chunk_decay.unbind(2)):
        entering.append(state)
        state = torch.addcmul(states_k, decay_k, state)
    entering = torch.stack(entering, dim=2).view(batch, G, n, N, Hg * P)
    # 4. Off-diagonal blocks: the entering state read out by C_t, decayed from the chunk start to position t.
    y = (C @ entering).view(batch, G, n, L, Hg, P) * per_position(torch.exp(a_cum))  # (batch, G, n, L, Hg, P)
    y = y + y_diag.permute(0, 1, 3, 4, 2, 5)
    y = y.permute(0, 2, 3, 1, 4, 5).reshape(batch, n * L, H, P)[:, :T]  # (batch, G, n, L, Hg, P) -> (batch, T, H, P)
    if D is not None:
        y = y + x * D.to(f)[:, None]
    final_state = state.permute(0, 1, 3, 4, 2).reshape(batch, H, P, N)  # (batch, G, N, Hg, P) -> (batch, H, P, N)
    return y.to(out_dtype), final_state


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402

MAMBA2_OP_D_STATE = 64  # Mamba-2 uses N = 64 or 128 (the paper's default for its larger models is 128)


@register_op("mamba2")
def make_mamba2_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                       generator: torch.Generator) -> dict:
    """H heads of head dim P = D, one group (G = 1) of B and C with state N = 64.

    dt = softplus(Gaussian - 3) (about 0.05); A = -(1..H) (Mamba-2's initialisation range A in [1, 16]);
    x, B, C Gaussian; D = 1."""
    N = MAMBA2_OP_D_STATE

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    inputs = {"x": randn(B, T, H, D), "dt": torch.nn.functional.softplus(randn(B, T, H) - 3.0),
              "A": -torch.arange(1, H + 1, dtype=torch.float32), "B": randn(B, T, 1, N), "C": randn(B, T, 1, N),
              "D": torch.ones(H)}
    return {k: t.to(device, dtype) for k, t in inputs.items()}


@register_op_impl("mamba2", "chunk", source="ours")
def _mamba2_chunk(inputs: dict) -> torch.Tensor:
    return chunk_ssd(**inputs)[0]


@register_op_impl("mamba2", "naive", source="ours")
def _mamba2_naive(inputs: dict) -> torch.Tensor:
    return naive_ssd(**inputs)[0]


@register_op_impl("mamba2", "transformers.mamba2_chunk_scan", source="transformers", requires=("transformers",),
                  notes="the chunked SSD in PyTorch that Mamba2Mixer's torch_forward path runs without mamba_ssm "
                        "(transformers 5.x; chunk 64); timed: that function alone")
def _mamba2_transformers(inputs: dict) -> torch.Tensor:
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    return mamba2_chunk_scan(inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], chunk_size=64,
                             D=inputs["D"])
