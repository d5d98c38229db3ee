"""Benchmarks: each compares our code with the tool a user would otherwise use, in the
same process on the same machine, and prints the ratio. ``python -m benchmarks``."""
