"""pynenc's own integration conformance suite for state backend, on the Django backends."""

from pynenc_tests.integration.state_backend.all_tests import *
