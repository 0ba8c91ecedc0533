"""pynenc's own unit conformance suite for app, on the Django backends."""

from pynenc_tests.unit.app.all_tests import *
