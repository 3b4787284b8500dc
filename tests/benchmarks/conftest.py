"""pytest-benchmark files: skipped in the normal test run (pyproject's addopts has --benchmark-disable). Run them with
``python -m pytest tests/benchmarks --benchmark-enable`` (or ``-o addopts= --benchmark-only``: pytest-benchmark
refuses --benchmark-only beside the --benchmark-disable of addopts)."""
import pytest


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --benchmark-only or --benchmark-enable")
    for item in items:
        if "tests/benchmarks" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _steady_cpu_allocator():
    """The harness's CPU allocator setting, so that times measure compute rather than page faults."""
    from harness.device import configure_cpu_allocator

    configure_cpu_allocator("caching")
