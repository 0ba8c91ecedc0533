"""pynenc's own unit conformance suite for broker, on the Django backends."""

from pynenc_tests.unit.broker.all_tests import *
