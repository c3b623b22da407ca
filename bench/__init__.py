"""Benchmarks that print comparison tables (``python -m bench NAME``)."""
