"""Benchmarks (`python -m aiq_sync.bench.<module>`)."""
