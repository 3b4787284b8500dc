"""An example transformer-bench plugin (see README.md)."""
