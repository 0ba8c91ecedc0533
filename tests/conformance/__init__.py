"""pynenc's own conformance suites, run on the Django backends."""
