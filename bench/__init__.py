"""Benchmarks: scripts that run the real code on the local stack and print figures (never tests)."""
