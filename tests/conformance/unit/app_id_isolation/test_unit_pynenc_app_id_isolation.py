"""pynenc's own unit conformance suite for app id isolation, on the Django backends."""

from pynenc_tests.unit.app_id_isolation.all_tests import *
