"""Benchmarks of pynenc-django (not part of the package; see bench/README.md)."""
