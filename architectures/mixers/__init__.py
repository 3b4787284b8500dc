"""The zoo: importing this package registers every mixer (one file per method, one decorator each)."""
from . import flash, gqa, linear, sliding_window, standard  # noqa: F401
