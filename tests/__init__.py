"""The test suite, a package so that `tests.support` imports one way from tests and benches."""
