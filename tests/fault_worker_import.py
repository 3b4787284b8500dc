"""A plugin that imports in the `run` process but fails inside a worker (HARNESS_PARENT_PID is set only there): a
broken worker environment, which must stop the run with a message, not become one `crashed` row per cell."""
import os

if "HARNESS_PARENT_PID" in os.environ:
    raise RuntimeError("this plugin cannot be imported inside a worker")
