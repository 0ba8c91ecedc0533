"""pynenc's own unit conformance suite for state backend, on the Django backends."""

from pynenc_tests.unit.state_backend.all_tests import *
