"""Benchmarks: loopback only, bounded in time; `python bench/run.py` is the side-by-side one."""
