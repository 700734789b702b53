"""Benchmarks of the validator: run them as modules from the repo root (``python -m benchmarks.harness``)."""
