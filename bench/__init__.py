"""Benchmarks: `python -m bench.poll` measures polling against digest's peer and the floor."""
