"""pynenc's own integration conformance suite for client data store, on the Django backends."""

from pynenc_tests.integration.test_client_data_store.all_tests import *
