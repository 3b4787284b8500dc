import pytest
import torch

import architectures
from architectures import Mixer, MixerSpec, Paper
from architectures.registry import MIXERS, DuplicateNameError, UnknownNameError, register_mixer

SPEC = MixerSpec(family="test", paper=Paper("t", "0000.00000", 2000), claimed_time=None, claimed_memory=None,
                 time_exponent=None, memory_exponent=None, state_exponent=None)


def test_the_five_spine_mixers_are_registered():
    assert {"standard", "flash", "sliding_window", "linear", "gqa"} <= set(architectures.list_mixers())


def test_glob_filters():
    assert architectures.list_mixers("*window*") == ["sliding_window"]
    assert architectures.list_mixers(["st*", "fl*"]) == ["flash", "standard"]
    assert architectures.list_mixers("nothing*") == []


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError) as info:
        architectures.get_mixer("flsh")
    message = str(info.value)
    assert "did you mean 'flash'" in message and "available:" in message and "standard" in message


def test_duplicate_name_raises():
    with pytest.raises(DuplicateNameError):
        @register_mixer("standard", spec=SPEC)
        class Again(Mixer):
            def __init__(self, d_model, n_heads, *, causal=True, impl=None):
                super().__init__(d_model, n_heads, causal=causal, impl=impl)


def test_spec_defaults_must_match_constructor():
    with pytest.raises(ValueError, match="differ"):
        @register_mixer("_mismatch", spec=SPEC)
        class Mismatch(Mixer):
            def __init__(self, d_model, n_heads, *, causal=True, impl=None, width: int = 3):
                super().__init__(d_model, n_heads, causal=causal, impl=impl)
    assert "_mismatch" not in MIXERS


@pytest.mark.parametrize("name", architectures.list_mixers())
def test_spec_is_complete(name):
    cls = architectures.get_mixer(name)
    spec = cls.spec
    assert cls.name == name
    assert spec.family and spec.paper.arxiv and 1990 < spec.paper.year < 2030
    assert spec.modes & {"causal", "bidirectional"}, "a mixer must run in at least one attention mode"
    assert dict(spec.default_hparams) == cls.signature_defaults()
    for exponent in (spec.time_exponent, spec.memory_exponent, spec.state_exponent):
        assert exponent is None or 0 <= exponent <= 3


@pytest.mark.parametrize("name", architectures.list_mixers())
def test_hparams_are_reported(name):
    cls = architectures.get_mixer(name)
    causal = "causal" in cls.spec.modes  # a bidirectional-only mixer (linformer) refuses causal=True
    mixer = architectures.create_mixer(name, 64, 2, causal=causal, **cls.spec.test_hparams)
    assert mixer.hparams() == {**cls.spec.default_hparams, **cls.spec.test_hparams}


def test_bad_construction_is_explained():
    with pytest.raises(ValueError, match="divisible"):
        architectures.create_mixer("standard", 10, 3)
    with pytest.raises(ValueError, match="no impl"):
        architectures.create_mixer("standard", 64, 2, impl="cuda_magic")
    with pytest.raises(TypeError, match="no hyperparameter"):
        architectures.create_mixer("standard", 64, 2, window=3)
    with pytest.raises(ValueError, match="does not support bidirectional"):
        architectures.create_mixer("sliding_window", 64, 2, causal=False)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        architectures.create_mixer("gqa", 64, 4, n_kv_heads=3)
