"""pynenc's own integration conformance suite for combinations, on the Django backends."""

from pynenc_tests.integration.combinations.all_tests import *
