"""pynenc's own unit conformance suite for client data store, on the Django backends."""

from pynenc_tests.unit.client_data_store.all_tests import *
