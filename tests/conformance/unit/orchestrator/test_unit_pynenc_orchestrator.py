"""pynenc's own unit conformance suite for orchestrator, on the Django backends."""

from pynenc_tests.unit.orchestrator.all_tests import *
