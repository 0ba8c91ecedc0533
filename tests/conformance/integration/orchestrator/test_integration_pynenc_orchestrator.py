"""pynenc's own integration conformance suite for orchestrator, on the Django backends."""

from pynenc_tests.integration.orchestrator.all_tests import *
