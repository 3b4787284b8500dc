"""Clustering attention as the Routing Transformer's routing attention (Roy et al. 2020): shared query-keys, layer-
normalised, are assigned to their nearest of k centroids (online spherical k-means); each query attends, causally,
within its cluster to its w = ceil(n / k) most recent cluster-mates (``ops.routing_attention``, whose docstring says
why a window replaces the paper's balanced top-k). O(n w d) = O(n^2 d / k) time and O(n w) memory: O(n^1.5) with
k ~ sqrt(n) clusters.

Hyperparameter rules, explicit:
- ``n_clusters``: an int fixes k; None (the default) means k = max(1, round(sqrt(n))) at length n, the paper's choice
  that gives O(n^1.5). Either way the window is w = ceil(n / k), the size of a balanced cluster.
- Centroids: a buffer of (n_heads, k_max, head_dim) unit vectors drawn from a ``torch.Generator`` seeded with
  ``seed``; k_max = n_clusters if it is an int, else ``max_clusters`` (default 192 >= round(sqrt(32768)), the longest
  length of the long-context suite); with the sqrt rule a length-n input uses the first round(sqrt(n)) of them (they
  are i.i.d. at initialisation, so any prefix is a valid start), and a length whose rule exceeds max_clusters raises.
- Online k-means: in training mode, once per backward pass through the layer's output (a hook on it), the centroids
  the forward used move by an exponential moving average, decay ``decay`` (the paper's lambda = 0.999), towards the
  normalised mean of the vectors assigned to them. A forward alone (evaluation, inference, the causality tests) never
  changes the routing, so every forward is a pure function of its input and the buffer.

Not a decoder: k and w follow the full length n, so the routing of a prefix depends on how long the sequence is; a
step-by-step decode could not reproduce the forward, and the spec has no "decode" mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..mixer import Mixer
from ..ops.routing_attention import (assign_clusters, kmeans_ema_update, naive_routing_attention, normalize,
                                     routing_attention)
from ..registry import register_mixer
from ..spec import MixerSpec, Paper


@register_mixer("clustering", spec=MixerSpec(
    family="sparse attention (clustered)",
    paper=Paper("Efficient Content-Based Sparse Attention with Routing Transformers", "2003.05997", 2020),
    claimed_time="O(n^1.5 d)", claimed_memory="O(n^1.5)",
    time_exponent=1.5, memory_exponent=1.5, state_exponent=None,
    claimed_quality=None,
    claim_source="guide 000, Complexity Reduction (clustering attention, no cost given); the cost is the Routing "
                 "Transformer's O(n^1.5 d) with sqrt(n) clusters, as issue 4 states",
    modes=frozenset({"causal"}),
    impls=("torch",),
    positions="absolute",
    default_hparams={"n_clusters": None, "max_clusters": 192, "decay": 0.999, "seed": 0},
    test_hparams={"max_clusters": 16},
    notes="Routing attention with shared, layer-normalised query-keys; nearest-centroid assignment; each query reads "
          "its ceil(n/k) most recent cluster-mates (causal); itself only if alone; k = round(sqrt(n)) unless "
          "n_clusters is set; centroids move by EMA once per training backward pass. No decode: k and the window "
          "depend on the full length.",
))
class ClusteringAttention(Mixer):
    # A cluster is a discrete choice: a bf16 rounding can move a token to another cluster (see tests/test_mixers.py).
    discrete_routing = True

    def __init__(self, d_model: int, n_heads: int, *, causal: bool = True, impl: str | None = None,
                 n_clusters: int | None = None, max_clusters: int = 192, decay: float = 0.999, seed: int = 0):
        super().__init__(d_model, n_heads, causal=causal, impl=impl)
        if n_clusters is not None and n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1 or None (round(sqrt(n))), got {n_clusters}")
        if max_clusters < 1 or not 0.0 <= decay < 1.0:
            raise ValueError(f"need max_clusters >= 1 and 0 <= decay < 1, got {max_clusters}, {decay}")
        self.n_clusters, self.max_clusters, self.decay, self.seed = n_clusters, max_clusters, decay, seed
        self.wqk = nn.Linear(d_model, d_model, bias=False)  # shared query-key projection
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        k_max = n_clusters if n_clusters is not None else max_clusters
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("centroids", F.normalize(torch.randn(n_heads, k_max, self.head_dim, generator=g), dim=-1))

    def clusters_for(self, n: int) -> int:
        """k at length n: n_clusters, or round(sqrt(n)) when it is None."""
        k = self.n_clusters if self.n_clusters is not None else max(1, round(math.sqrt(n)))
        if k > self.centroids.shape[1]:
            raise ValueError(f"clustering: length {n} needs {k} clusters but only max_clusters="
                             f"{self.centroids.shape[1]} centroids exist")
        return k

    def window_for(self, n: int) -> int:
        """w = ceil(n / k): the most a query reads, the size of a balanced cluster."""
        return -(-n // self.clusters_for(n))

    def _shared(self, x: torch.Tensor, fp32: bool = False):
        """x: (B, T, D) -> u = LN(qk), v, each (B, T, H, Dh)."""
        B, T, _ = x.shape
        shape = (B, T, self.n_heads, self.head_dim)
        if fp32:
            x = x.float()
            qk, v = F.linear(x, self.wqk.weight.float()), F.linear(x, self.wv.weight.float())
        else:
            qk, v = self.wqk(x), self.wv(x)
        return normalize(qk.view(shape)), v.view(shape)

    def _out(self, o: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        return self.merge_heads(o, self.wo, fp32)  # (..., H, Dh) -> (..., D)

    def clusters(self, x: torch.Tensor) -> torch.Tensor:
        """The cluster of every token and head that the forward uses: (B, T, H)."""
        u, _ = self._shared(x)
        return assign_clusters(u, self.centroids[:, :self.clusters_for(x.shape[1])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        u, v = self._shared(x)
        k = self.clusters_for(T)
        clusters = assign_clusters(u, self.centroids[:, :k])
        y = self._out(routing_attention(u, v, clusters, window=self.window_for(T), causal=self.causal))
        if self.training and y.requires_grad:
            u_seen = u.detach()

            def update_centroids(grad: torch.Tensor) -> None:  # runs when the backward pass reaches the output
                with torch.no_grad():
                    self.centroids[:, :k] = kmeans_ema_update(self.centroids[:, :k], u_seen, clusters, self.decay)

            y.register_hook(update_centroids)
        return y

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        u, v = self._shared(x, fp32=True)
        clusters = assign_clusters(u, self.centroids[:, :self.clusters_for(T)])
        o = naive_routing_attention(u, v, clusters, window=self.window_for(T), causal=self.causal)
        return self._out(o, fp32=True)
