"""Benchmarks and the demo: print figures measured side by side in one run (never timed asserts)."""
