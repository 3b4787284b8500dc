import pytest
import torch

import architectures

# Odd shapes, as in fla's tests: T=63 (not a multiple of any chunk or window), head dim 60.
B, T, D_MODEL, N_HEADS = 2, 63, 120, 2


def make_mixer(name: str, *, causal: bool = True, impl: str | None = None, d_model: int = D_MODEL,
               n_heads: int = N_HEADS, **overrides):
    """A registered mixer at test size, with its spec's test_hparams, in fp32, seeded."""
    cls = architectures.get_mixer(name)
    hparams = {**cls.spec.test_hparams, **overrides}
    torch.manual_seed(0)
    return architectures.create_mixer(name, d_model, n_heads, causal=causal, impl=impl, **hparams).float()


def runnable_impls(name: str) -> list[str]:
    cls = architectures.get_mixer(name)
    return [i for i in cls.spec.impls if cls.unavailable_reason(i, torch.device("cpu"), torch.float32) is None]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
