"""The benchmark suite and the standalone benchmark scripts, as one package.

Run from the repository root:

    python -m benchmarks.suite --quick          # the suite (benchmarks/RESULTS.md)
    python -m benchmarks.bench_diffrec_ml1m     # and each bench_*.py likewise

Layout: ``runner`` (options, result cache keyed by job and code version, run locks,
worker processes), ``spec`` (the experiment yaml, trimmed for --quick), ``sections/`` (one
module per report section, each declaring its jobs, worker and render in a ``SECTION``
entry that the registry finds), ``training`` (helpers the workers share), ``selection``
(RecBole's early-stopping rule), ``report`` (shared rendering) and ``suite`` (the CLI).
"""
