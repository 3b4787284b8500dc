"""Reports of a run directory: ``build.write_report(OUT)`` writes ``OUT/report.md`` and its plots.

``run.RunData`` is the run directory loaded once; each benchmark kind writes its own section from it
(``Benchmark.report_section``), with the helpers of ``markdown`` and ``plots``. This package's ``__init__`` imports
nothing, so that the kinds' section modules can use these helpers without importing the benchmark registry back.
"""
