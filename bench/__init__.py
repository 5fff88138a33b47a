"""Benchmarks behind `make bench` (bench/run.py); results go to docs/BENCHMARKS.md."""
