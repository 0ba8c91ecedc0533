"""pynenc's own unit conformance suite for trigger, on the Django backends."""

from pynenc_tests.unit.trigger.all_tests import *
