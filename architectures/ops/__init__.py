"""Sequence-mixing operators on (B, T, H, D) tensors. Each has a plain fp32 ``naive_*`` loop (the oracle) and the
fast form with the same signature."""
