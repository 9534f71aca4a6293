"""The benchmarks, run from the repository root as modules (`python -m benches.bench_hub`,
`python -m benches.run_all`), so that they import the tests' helpers as `tests.support`."""
