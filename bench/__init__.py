"""Benchmarks of the one-step tasks: `python -m bench` (full size) and `python -m bench --tiny` (smoke)."""
