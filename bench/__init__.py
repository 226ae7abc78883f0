"""Benchmarks of optimum-bridge (``make bench`` / ``python -m bench``); see ``bench/README.md``.

Never part of the test suite: each benchmark starts its own private Redis,
sandbox and worker processes on 127.0.0.1, prints a table, and writes a JSON
record (and a PNG chart where useful) under ``bench/results/``.
"""
