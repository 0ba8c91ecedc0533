"""pynenc's own integration conformance suite for app id isolation, on the Django backends."""

from pynenc_tests.integration.app_id_isolation.all_tests import *
