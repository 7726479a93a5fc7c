"""Benchmarks of fit-check: ``make bench`` / ``make bench-quick``."""
