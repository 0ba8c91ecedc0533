"""pynenc's own integration conformance suite for broker, on the Django backends."""

from pynenc_tests.integration.broker.all_tests import *
