"""transformer-bench's engine: suites -> cells -> measurements -> results.jsonl -> analysis -> report."""
__version__ = "0.1.0"
