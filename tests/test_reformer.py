"""Reformer's LSH attention: the blocked op against the fp32 loop and against dense attention under the mask it claims
(built here from the buckets), on odd shapes; Hugging Face's LSHSelfAttention as an oracle for the hashing and for
the attention; linear memory; the seeded rotations."""
import math

import pytest
import torch

import architectures
from architectures.ops.lsh_attention import lsh_attention, lsh_hash, naive_lsh_attention, normalize_keys

B, T, H, D = 2, 63, 3, 60


def claimed_mask(buckets: torch.Tensor, chunk_size: int, causal: bool) -> torch.Tensor:
    """The pattern the op claims, for one (batch, head): buckets (T, R) -> (T, T) bool, [i, j] = query i sees key j.

    Per round: the rank of a token in its bucket is the number of earlier positions in that bucket; j is in i's
    window when it has i's bucket and its chunk (rank // chunk_size) is i's or the one before. The rounds' windows
    are united; causal keeps j <= i; i sees itself only if it sees nothing else."""
    n, R = buckets.shape
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    seen = torch.zeros(n, n, dtype=torch.bool)
    for r in range(R):
        same = buckets[:, None, r] == buckets[None, :, r]
        rank = (same & (j < i)).sum(1)  # earlier tokens in the same bucket
        chunk = rank // chunk_size
        seen |= same & (chunk[None, :] <= chunk[:, None]) & (chunk[None, :] >= chunk[:, None] - 1)
    if causal:
        seen &= j <= i
    others = seen & (i != j)
    return others | ((i == j) & ~others.any(1, keepdim=True))


def dense_lsh_attention(qk, v, buckets, chunk_size, causal):
    """Plain softmax attention, queries qk, keys normalize_keys(qk), under claimed_mask: (B, T, H, D)."""
    scores = torch.einsum("bthd,bshd->bhts", qk, normalize_keys(qk))
    mask = torch.stack([torch.stack([claimed_mask(buckets[b, :, h], chunk_size, causal) for h in range(qk.shape[2])])
                        for b in range(qk.shape[0])])  # (B, H, T, T)
    return torch.einsum("bhts,bshd->bthd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v)


def random_case(n_hashes, n_buckets, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, T, H, D, generator=g).requires_grad_(requires_grad)
    v = torch.randn(B, T, H, D, generator=g).requires_grad_(requires_grad)
    rotations = torch.randn(H, D, n_hashes, n_buckets // 2, generator=g)
    return qk, v, lsh_hash(qk, rotations)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n_hashes,n_buckets,chunk_size", [(1, 4, 8), (2, 4, 8), (3, 2, 5), (2, 8, 1), (2, 6, 64)])
def test_blocked_op_equals_dense_attention_under_the_claimed_mask(causal, n_hashes, n_buckets, chunk_size):
    qk, v, buckets = random_case(n_hashes, n_buckets)
    want = dense_lsh_attention(qk, v, buckets, chunk_size, causal)
    torch.testing.assert_close(lsh_attention(qk, v, buckets, chunk_size=chunk_size, causal=causal), want,
                               rtol=1e-5, atol=1e-5)
    if (n_hashes, n_buckets, chunk_size) == (2, 4, 8):
        torch.testing.assert_close(naive_lsh_attention(qk, v, buckets, chunk_size=chunk_size, causal=causal), want,
                                   rtol=1e-5, atol=1e-5)


def test_several_rounds_count_a_key_once_and_see_more_than_one_round():
    _, _, buckets = random_case(n_hashes=3, n_buckets=2)
    union = claimed_mask(buckets[0, :, 0], 5, causal=True)
    one_round = claimed_mask(buckets[0, :, 0, :1], 5, causal=True)
    assert union.sum() > one_round.sum(), "extra rounds add keys"
    assert union.sum() < T * (T + 1) / 2 / 2, "and the pattern stays sparse"


def test_blocked_gradients_match_naive():
    qk, v, buckets = random_case(2, 4, requires_grad=True)
    got = lsh_attention(qk, v, buckets, chunk_size=8, causal=True)
    want = naive_lsh_attention(qk, v, buckets, chunk_size=8, causal=True)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (qk, v), g), torch.autograd.grad(want, (qk, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mixer_forward_equals_dense_attention_under_its_own_buckets():
    m = architectures.create_mixer("reformer", 120, 2, n_hashes=2, n_buckets=4, chunk_size=8)
    x = torch.randn(B, T, 120)
    qk = m.wqk(x).view(B, T, 2, 60)
    v = m.wv(x).view(B, T, 2, 60)
    want = m.wo(dense_lsh_attention(qk, v, m.buckets(x), 8, causal=True).reshape(B, T, 120))
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)


def test_rotations_are_a_seeded_buffer():
    a = architectures.create_mixer("reformer", 64, 2, n_hashes=3, n_buckets=8, seed=5)
    b = architectures.create_mixer("reformer", 64, 2, n_hashes=3, n_buckets=8, seed=5)
    c = architectures.create_mixer("reformer", 64, 2, n_hashes=3, n_buckets=8, seed=6)
    assert a.rotations.shape == (2, 32, 3, 4) and "rotations" in a.state_dict()
    assert torch.equal(a.rotations, b.rotations) and not torch.equal(a.rotations, c.rotations)
    with pytest.raises(ValueError, match="even"):
        architectures.create_mixer("reformer", 64, 2, n_buckets=5)


def test_bf16_matches_fp32_under_the_same_buckets():
    qk, v, buckets = random_case(2, 4)
    y32 = lsh_attention(qk, v, buckets, chunk_size=8, causal=True)
    y16 = lsh_attention(qk.bfloat16(), v.bfloat16(), buckets, chunk_size=8, causal=True).float()
    assert (y16 - y32).abs().max() <= 0.05 * y32.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T_,n_buckets,chunk_size,n_hashes", [(300, 64, 64, 2), (500, 8, 16, 2), (257, 64, 32, 4)])
def test_blocked_op_is_bitwise_causal_at_longer_lengths(dtype, T_, n_buckets, chunk_size, n_hashes):
    """Changing tokens t.. leaves every output before t bitwise equal. Later tokens in earlier buckets shift where a
    past query's keys sit in its chunk window; before the row sums were aligned (``_aligned``) that moved outputs by
    up to 8e5 ulps in fp32 and 3e4 in fp64 at these shapes."""
    g = torch.Generator().manual_seed(1)
    qk = torch.randn(2, T_, 2, 32, generator=g, dtype=dtype)
    v = torch.randn(2, T_, 2, 32, generator=g, dtype=dtype)
    rotations = torch.randn(2, 32, n_hashes, n_buckets // 2, generator=g, dtype=dtype)
    y = lsh_attention(qk, v, lsh_hash(qk, rotations), chunk_size=chunk_size, causal=True)
    for t in (1, chunk_size - 1, chunk_size, chunk_size + 1, 2 * chunk_size, T_ // 2, T_ - 1):
        qk2, v2 = qk.clone(), v.clone()
        qk2[:, t:] = 3 * torch.randn(2, T_ - t, 2, 32, generator=g, dtype=dtype)
        v2[:, t:] = torch.randn(2, T_ - t, 2, 32, generator=g, dtype=dtype)
        y2 = lsh_attention(qk2, v2, lsh_hash(qk2, rotations), chunk_size=chunk_size, causal=True)
        assert torch.equal(y2[:, :t], y[:, :t]), f"split {t}: {(y2[:, :t] - y[:, :t]).abs().max():.3g}"


def test_memory_is_linear_in_length():
    from harness.measure import LiveTensorBytes

    peaks = []
    for n in (1024, 2048, 4096):
        qk, v = torch.randn(1, n, 1, 16), torch.randn(1, n, 1, 16)
        buckets = lsh_hash(qk, torch.randn(1, 16, 2, 8))
        with LiveTensorBytes() as live:
            lsh_attention(qk, v, buckets, chunk_size=32, causal=True)
        peaks.append(live.peak)
    assert peaks[2] < 4096 * 4096 * 4 / 2, "at n = 4096, well below one fp32 n x n score matrix"
    assert peaks[1] / peaks[0] == pytest.approx(2, rel=0.05) and peaks[2] / peaks[1] == pytest.approx(2, rel=0.05)


# ---- Hugging Face transformers' LSHSelfAttention as an oracle ---------------------------------------------------

def hf_lsh_layer(causal, n_hashes, n_buckets, chunk_size, seq_len, hash_seed=7):
    pytest.importorskip("transformers")
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    cfg = ReformerConfig(attn_layers=["lsh"], hidden_size=2 * D, num_attention_heads=2, attention_head_size=D,
                         lsh_attn_chunk_length=chunk_size, num_hashes=n_hashes, num_buckets=n_buckets,
                         lsh_num_chunks_before=0, lsh_num_chunks_after=0, is_decoder=causal, hash_seed=hash_seed,
                         lsh_attention_probs_dropout_prob=0.0, max_position_embeddings=seq_len)
    return LSHSelfAttention(cfg, layer_idx=0).eval()


def test_hashing_matches_hugging_face_given_the_same_rotations():
    """HF draws its rotations with torch.manual_seed(hash_seed); torch.randn((H, D, n_hashes, n_buckets / 2)), one per
    head and round, and hashes with argmax([xR; -xR]) as here; its bucket ids carry an offset of round * n_buckets."""
    n_hashes, n_buckets = 3, 8
    att = hf_lsh_layer(True, n_hashes, n_buckets, chunk_size=8, seq_len=T)
    x = torch.randn(B, T, 2 * D)
    qk = att.query_key(x).view(B, T, 2, D)
    with torch.no_grad():
        theirs = att._hash_vectors(qk.transpose(1, 2), n_hashes, None).view(B, 2, n_hashes, T)
    torch.manual_seed(7)
    rotations = torch.randn(2, D, n_hashes, n_buckets // 2)
    ours = lsh_hash(qk, rotations).permute(0, 2, 3, 1) + (torch.arange(n_hashes) * n_buckets).view(1, 1, -1, 1)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_hugging_face_where_both_define_the_same_computation(causal):
    """Differences from HF, and the configuration where they vanish. HF chunks the globally sorted sequence (all
    rounds concatenated, chunks straddling buckets, look-back wrapping around) and lets a query see every key of its
    chunks whatever the bucket; it also does not discount a key seen in several rounds (the paper's log N_ij). Here
    chunks are counted from each bucket's start and keys must share the bucket (see ops/lsh_attention.py). Both are
    the same computation when every bucket holds exactly chunk_size tokens, HF looks back no chunk
    (lsh_num_chunks_before=0), and no two tokens share a bucket in two rounds: we force such buckets (a random
    Latin-square layout, round 0 = perm // C, round 1 = perm % C) through HF's `buckets` argument. In fp64: HF combines
    the rounds as exp(l - logsumexp(l)) with l = -1e5 for a query that sees only itself, which fp32 rounds (0.4989
    instead of 0.5, seen as a 3e-3 difference); in fp64 that rounding is gone."""
    C = 8
    n = C * C  # n_buckets = C buckets of C tokens per round
    att = hf_lsh_layer(causal, n_hashes=2, n_buckets=C, chunk_size=C, seq_len=n).double()
    x = torch.randn(B, n, 2 * D, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(B * 2)]).view(B, 2, n)  # (B, H, n)
    buckets = torch.stack([perm // C, perm % C], dim=-1)  # (B, H, n, 2): pairs share at most one round
    hf_buckets = (buckets + torch.arange(2) * C).permute(0, 1, 3, 2).contiguous()  # (B, H, rounds, n), offset ids
    with torch.no_grad():
        theirs = att(x, buckets=hf_buckets).hidden_states.view(B, n, 2, D)
        qk, v = att.query_key(x).view(B, n, 2, D), att.value(x).view(B, n, 2, D)
        ours = lsh_attention(qk, v, buckets.permute(0, 2, 1, 3), chunk_size=C, causal=causal)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
