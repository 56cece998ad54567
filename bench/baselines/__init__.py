"""Baselines the benchmarks compare against."""
