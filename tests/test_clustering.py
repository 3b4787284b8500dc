"""Clustering (routing) attention: the blocked op against the fp32 loop and against dense attention under the mask it
claims (built here from the clusters), on odd shapes; the cluster-count rule; the online k-means of the centroids;
memory far below n^2."""
import math

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.ops.routing_attention import (assign_clusters, kmeans_ema_update, naive_routing_attention,
                                                 normalize, routing_attention)

B, T, H, D = 2, 63, 3, 60


def claimed_mask(clusters: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """The pattern the op claims, for one (batch, head): clusters (T,) -> (T, T) bool, [i, j] = query i sees key j.

    j must be in i's cluster with |rank_i - rank_j| < window, rank = number of earlier positions in the cluster;
    causal keeps j <= i; i sees itself only if it sees nothing else."""
    n = clusters.shape[0]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    same = clusters[:, None] == clusters[None, :]
    rank = (same & (j < i)).sum(1)
    seen = same & ((rank[:, None] - rank[None, :]).abs() < window)
    if causal:
        seen &= j <= i
    others = seen & (i != j)
    return others | ((i == j) & ~others.any(1, keepdim=True))


def dense_routing_attention(u, v, clusters, window, causal):
    scores = torch.einsum("bthd,bshd->bhts", u, u) / math.sqrt(u.shape[-1])
    mask = torch.stack([torch.stack([claimed_mask(clusters[b, :, h], window, causal) for h in range(u.shape[2])])
                        for b in range(u.shape[0])])  # (B, H, T, T)
    return torch.einsum("bhts,bshd->bthd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v)


def random_case(k, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, T, H, D, generator=g).requires_grad_(requires_grad)
    v = torch.randn(B, T, H, D, generator=g).requires_grad_(requires_grad)
    centroids = F.normalize(torch.randn(H, k, D, generator=g), dim=-1)
    u = normalize(qk)
    return qk, u, v, assign_clusters(u, centroids)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("k,window", [(1, 8), (4, 16), (8, 8), (8, 3), (20, 1), (3, 63)])
def test_blocked_op_equals_dense_attention_under_the_claimed_mask(causal, k, window):
    _, u, v, clusters = random_case(k)
    want = dense_routing_attention(u, v, clusters, window, causal)
    torch.testing.assert_close(routing_attention(u, v, clusters, window=window, causal=causal), want,
                               rtol=1e-5, atol=1e-5)
    if (k, window) == (8, 8):
        torch.testing.assert_close(naive_routing_attention(u, v, clusters, window=window, causal=causal), want,
                                   rtol=1e-5, atol=1e-5)


def test_blocked_gradients_match_naive():
    qk, u, v, clusters = random_case(8, requires_grad=True)
    got = routing_attention(u, v, clusters, window=8, causal=True)
    want = naive_routing_attention(u, v, clusters, window=8, causal=True)
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (qk, v), g, retain_graph=True)  # u = LN(qk) is shared by both graphs
    for a, b in zip(got_grads, torch.autograd.grad(want, (qk, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mixer_forward_equals_dense_attention_under_its_own_clusters():
    m = architectures.create_mixer("clustering", 120, 2, max_clusters=16).eval()
    x = torch.randn(B, T, 120)
    u, v = normalize(m.wqk(x).view(B, T, 2, 60)), m.wv(x).view(B, T, 2, 60)
    clusters = m.clusters(x)
    assert m.clusters_for(T) == 8 and m.window_for(T) == 8 and int(clusters.max()) < 8
    want = m.wo(dense_routing_attention(u, v, clusters, 8, causal=True).reshape(B, T, 120))
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)


def test_cluster_count_rule():
    m = architectures.create_mixer("clustering", 64, 2)
    assert [m.clusters_for(n) for n in (1, 63, 256, 1000, 4096, 32768)] == [1, 8, 16, 32, 64, 181]
    assert [m.window_for(n) for n in (63, 1000, 4096)] == [8, 32, 64]
    fixed = architectures.create_mixer("clustering", 64, 2, n_clusters=5)
    assert fixed.centroids.shape == (2, 5, 32) and fixed.clusters_for(4096) == 5 and fixed.window_for(4096) == 820
    small = architectures.create_mixer("clustering", 64, 2, max_clusters=10)
    with pytest.raises(ValueError, match="max_clusters"):
        small(torch.randn(1, 200, 64))  # round(sqrt(200)) = 14 > 10


def test_centroids_move_only_in_a_training_backward_pass():
    m = architectures.create_mixer("clustering", 64, 2, max_clusters=16, decay=0.5)
    x = torch.randn(2, 49, 64, requires_grad=True)  # k = 7
    before = m.centroids.clone()
    y = m(x)
    m(x)
    assert torch.equal(m.centroids, before), "a forward alone does not change the routing"
    y.sum().backward()
    moved = (m.centroids - before).norm(dim=-1) > 0  # (H, 16)
    assert moved[:, :7].any() and not moved[:, 7:].any(), "only the centroids in use move"
    torch.testing.assert_close(m.centroids.norm(dim=-1), torch.ones(2, 16))
    m.eval()
    after = m.centroids.clone()
    m(x).sum().backward()
    assert torch.equal(m.centroids, after), "no update in evaluation mode"


def test_ema_update_follows_the_formula():
    centroids = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]), dim=-1)  # (H=1, k=3, D=2)
    u = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, 2.0]])[None, :, None, :]  # (B=1, T=3, H=1, D=2)
    clusters = torch.tensor([0, 0, 1])[None, :, None]
    new = kmeans_ema_update(centroids, u, clusters, decay=0.9)
    mean0 = F.normalize(torch.tensor([0.7, 0.7]), dim=0)
    torch.testing.assert_close(new[0, 0], F.normalize(0.9 * torch.tensor([1.0, 0.0]) + 0.1 * mean0, dim=0))
    torch.testing.assert_close(new[0, 1], torch.tensor([0.0, 1.0]))  # mean points the same way
    torch.testing.assert_close(new[0, 2], torch.tensor([-1.0, 0.0]))  # no member: unchanged


def test_online_kmeans_finds_the_clusters_of_the_data():
    """Data from 4 directions on the sphere; EMA steps move the centroids onto the data: the mean cosine of a vector
    to its centroid rises from ~0.3 (random start) to above 0.8 (k-means may still merge two directions into one
    centroid, a local optimum, which caps it below 1 here)."""
    g = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    centroids = F.normalize(torch.randn(1, 4, 16, generator=g), dim=-1)

    def batch():
        labels = torch.randint(0, 4, (256,), generator=g)
        return normalize((directions[labels] + 0.05 * torch.randn(256, 16, generator=g))[None, :, None, :])

    def fit(c, u):
        return float((F.normalize(u[0, :, 0], dim=-1) * c[0, assign_clusters(u, c)[0, :, 0]]).sum(-1).mean())

    start = fit(centroids, batch())
    for _ in range(30):
        u = batch()
        centroids = kmeans_ema_update(centroids, u, assign_clusters(u, centroids), decay=0.7)
    assert start < 0.5 and fit(centroids, batch()) > 0.8


def test_bf16_matches_fp32_under_the_same_clusters():
    _, u, v, clusters = random_case(8)
    y32 = routing_attention(u, v, clusters, window=8, causal=True)
    y16 = routing_attention(u.bfloat16(), v.bfloat16(), clusters, window=8, causal=True).float()
    assert (y16 - y32).abs().max() <= 0.05 * y32.abs().max()


def test_memory_is_far_below_quadratic():
    from harness.measure import LiveTensorBytes

    peaks = {}
    for n in (1024, 4096):
        u, v = normalize(torch.randn(1, n, 1, 16)), torch.randn(1, n, 1, 16)
        k = round(math.sqrt(n))
        clusters = assign_clusters(u, F.normalize(torch.randn(1, k, 16), dim=-1))
        with LiveTensorBytes() as live:
            routing_attention(u, v, clusters, window=-(-n // k), causal=True)
        peaks[n] = live.peak
    assert peaks[4096] < 4096 * 4096 * 4 / 4, "well below one fp32 n x n score matrix"
    assert 5 < peaks[4096] / peaks[1024] < 11, "n w grows 8x from n = 1024 to 4096 (w = 32 -> 64)"
