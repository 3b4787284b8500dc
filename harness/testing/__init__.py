"""The fidelity test kit: the registry-wide checks of our own mixers, runnable on anyone's (a plugin's) mixer.

    transformer-bench check-mixer NAME            # a table of checks, exit 1 on a failure
    pytest --pyargs harness.testing               # the same checks as tests, on every plugin mixer
    TRANSFORMER_BENCH_CHECK="my_attn*" pytest --pyargs harness.testing   # or on the mixers a glob names

``kit.CHECKS``: the naive oracle (``Mixer.reference``, an fp32 loop) agrees with the forward, outputs and
gradients; causality (future tokens never change past outputs); a bidirectional mode sees the future; decode step by
step == forward and prefill + steps == forward; the measured state equals ``state_bytes`` at every length and scales
with batch and dtype; float64 and bfloat16 run (bfloat16 close to float32); gradients reach every parameter.
"""
from .kit import CHECKS, CheckResult, check_mixer

__all__ = ["CHECKS", "CheckResult", "check_mixer"]
