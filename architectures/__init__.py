"""transformer-bench's zoo: mixers (attention methods) behind one contract, their registry and an LM backbone."""
from .mixer import Mixer, State, measured_state_bytes
from .registry import (DuplicateNameError, Registry, UnknownNameError, create_mixer, get_mixer, list_mixers,
                       register_mixer)
from .spec import MODES, MixerSpec, Paper

from . import mixers  # noqa: E402,F401  (registers the zoo)
from .plugins import load_plugins  # noqa: E402

load_plugins()  # mixers and models of installed plugin packages (entry points; architectures.plugins)

__all__ = [
    "Mixer", "State", "measured_state_bytes", "MixerSpec", "Paper", "MODES", "Registry", "UnknownNameError",
    "DuplicateNameError", "register_mixer", "get_mixer", "create_mixer", "list_mixers",
]
