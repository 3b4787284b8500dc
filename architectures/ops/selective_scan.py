"""Mamba's selective scan (Gu & Dao 2023, arXiv:2312.00752, Algorithm 2 and Section 3.5), per channel d and state n:

    A_bar_t = exp(dt_t A)                      (d, N): A = -exp(A_log) < 0 and dt_t > 0, so 0 < A_bar_t <= 1
    h_t     = A_bar_t * h_{t-1} + (dt_t x_t) B_t   (the Euler step for B used by the reference implementation)
    y_t     = h_t C_t + D * x_t

Shapes: x, dt: (batch, T, d) (d = channels, Mamba's d_inner); A: (d, N); B, C: (batch, T, N), shared by all channels;
D: (d,) or None; the state h: (batch, d, N). Every form has the signature
``(x, dt, A, B, C, D=None, initial_state=None) -> (y, final_state)`` and computes in fp32 (or wider) whatever the
input dtype; y comes back in x's dtype, the state in the compute dtype.

``chunk_selective_scan`` is a two-level (chunked) scan, parallel over the T/L chunks of length L. A is diagonal but
differs per (channel, state) entry, so the decay between two positions is a (d, N) tensor and no (L x L) matrix
form exists as it does for Mamba-2 (a masked product would cost O(T L d N)); the work stays elementwise, on
(batch, T/L, d, N) tensors:
  1. a sweep over the L positions of all chunks at once, from a zero state, gives each chunk's final state (the
     discretised decays exp(dt_t A) it computes are kept for step 3);
  2. a loop over the T/L chunks carries the true state across chunk boundaries (the decay over a whole chunk is
     exp(A * sum of dt));
  3. a second sweep over the L positions, started from the true state entering each chunk, reads out y_t = h_t C_t.
Cost: time O(T d N), the same work as the sequential loop (each state entry is updated twice), but in 2L + T/L
vector operations instead of T (about 2 sqrt(T) at L = sqrt(T)); memory O(T d N) for the kept decays (the
sequential loop needs only O(d N)). Decays enter only as exp(dt * A) <= 1: no exponent is ever positive.
"""
from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def naive_selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, one token at a time, in fp32."""
    x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
    batch, T, d = x.shape
    h = x.new_zeros(batch, d, A.shape[-1]) if initial_state is None else initial_state.float()
    y = torch.zeros_like(x)
    for t in range(T):
        A_bar = torch.exp(dt[:, t, :, None] * A)  # (batch, d, N)
        h = A_bar * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = (h * C[:, t, None, :]).sum(-1)
    if D is not None:
        y = y + x * D.float()
    return y, h


def selective_scan_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                        D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step. x, dt: (batch, d); B, C: (batch, N); state (batch, d, N) -> (y: (batch, d), state)."""
    f = _compute_dtype(x)
    xf, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    h = xf.new_zeros(*xf.shape, A.shape[-1]) if initial_state is None else initial_state.to(f)
    h = torch.addcmul((dt * xf)[:, :, None] * B[:, None, :], torch.exp(dt[:, :, None] * A), h)
    y = (h @ C[:, :, None]).squeeze(-1)  # (batch, d)
    if D is not None:
        y = y + xf * D.to(f)
    return y.to(x.dtype), h


def chunk_selective_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                         chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-level scan of the module docstring; same result as ``naive_selective_scan``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    f = _compute_dtype(x)
    out_dtype = x.dtype
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    batch, T, d = x.shape
    N = A.shape[-1]
    L = chunk_size
    n = -(-T // L)
    pad = n * L - T
    u = dt * x  # (batch, T, d): dt_t x_t
    if pad:  # dt = 0 on padding: A_bar = 1 and no input, so the state passes through unchanged
        dt, u = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (dt, u))
        B, C = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (B, C))
    # Per-position and per-chunk slices are taken with unbind, whose backward is one stack: indexing inside the loops
    # would make autograd materialise a full-size zero gradient for every slice (quadratic in T).
    dt_c = dt.view(batch, n, L, d)  # (batch, n, L, d)
    dt_j = dt_c.unbind(2)  # L x (batch, n, d)
    u_j = u.view(batch, n, L, d).unbind(2)
    B_j = B.view(batch, n, L, N).unbind(2)  # L x (batch, n, N)
    C_j = C.view(batch, n, L, N).unbind(2)

    def inputs(j: int) -> torch.Tensor:  # u_j B_j at position j of every chunk: (batch, n, d, N)
        return u_j[j][..., None] * B_j[j][:, :, None, :]

    # 1. Each chunk's final state from a zero state, all chunks at once; keep the decays exp(dt_j A).
    h = x.new_zeros(batch, n, d, N)
    decays = []
    for j in range(L):
        decays.append(torch.exp(dt_j[j][..., None] * A))  # (batch, n, d, N)
        h = torch.addcmul(inputs(j), decays[j], h)
    # 2. The state entering each chunk: a short loop over the chunks.
    chunk_decay = torch.exp(dt_c.sum(2)[..., None] * A)  # (batch, n, d, N): prod_j A_bar_j = exp(A sum_j dt_j)
    state = x.new_zeros(batch, d, N) if initial_state is None else initial_state.to(f)
    entering = []
    for h_k, decay_k in zip(h.unbind(1), chunk_decay.unbind(1)):
        entering.append(state)
        state = torch.addcmul(h_k, decay_k, state)
    # 3. Sweep again from the entering states and read out y_t = h_t C_t.
    h = torch.stack(entering, dim=1)  # (batch, n, d, N)
    ys = []
    for j in range(L):
        h = torch.addcmul(inputs(j), decays[j], h)
        ys.append((h * C_j[j][:, :, None, :]).sum(-1))  # (batch, n, d)
    y = torch.stack(ys, dim=2).reshape(batch, n * L, d)[:, :T]  # (batch, n, L, d) -> (batch, T, d)
    if D is not None:
        y = y + x * D.to(f)
    return y.to(out_dtype), state


# ---- catalogue entries for the op_speed benchmark ----------------------------------------------------------------
from .catalog import register_op, register_op_impl  # noqa: E402

MAMBA_OP_D_STATE = 16  # Mamba's default state size per channel


@register_op("mamba")
def make_mamba_inputs(B: int, T: int, H: int, D: int, dtype: torch.dtype, device: torch.device,
                      generator: torch.Generator) -> dict:
    """Mamba has no heads: H x D is the channel count d (4 x 64 = 256, Mamba's d_inner at d_model 128), N = 16.

    dt = softplus(Gaussian - 4) (about 0.02, Mamba's dt range is [1e-3, 0.1]); A = -(1..N) per channel times a random
    factor in [0.5, 1.5] (S4D-real initialisation, perturbed); B, C, x Gaussian; D = 1 (Mamba's initialisation)."""
    d, N = H * D, MAMBA_OP_D_STATE

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float32)

    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(d, 1) * (0.5 + torch.rand(d, N, generator=generator))
    inputs = {"x": randn(B, T, d), "dt": torch.nn.functional.softplus(randn(B, T, d) - 4.0), "A": A,
              "B": randn(B, T, N), "C": randn(B, T, N), "D": torch.ones(d)}
    return {k: t.to(device, dtype) for k, t in inputs.items()}


@register_op_impl("mamba", "chunk", source="ours")
def _mamba_chunk(inputs: dict) -> torch.Tensor:
    return chunk_selective_scan(**inputs)[0]


@register_op_impl("mamba", "naive", source="ours")
def _mamba_naive(inputs: dict) -> torch.Tensor:
    return naive_selective_scan(**inputs)[0]


@register_op_impl("mamba", "transformers.mamba_selective_scan", source="transformers", requires=("transformers",),
                  notes="the sequential PyTorch scan that MambaMixer runs without mamba_ssm (transformers 5.x; "
                        "the former MambaMixer.slow_forward): discretises all of (B, d, T, N) at once, then loops "
                        "over T; timed: that function alone, on (B, d, T) layout inputs")
def _mamba_transformers(inputs: dict) -> torch.Tensor:
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    def channels_first(t):  # (B, T, d) -> (B, d, T)
        return t.transpose(1, 2)

    y = mamba_selective_scan(channels_first(inputs["x"]), channels_first(inputs["dt"]), inputs["A"],
                             channels_first(inputs["B"]), channels_first(inputs["C"]), D=inputs["D"])
    return y.transpose(1, 2)  # (B, d, T) -> (B, T, d)
