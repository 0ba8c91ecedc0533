"""Slot-owner races that pynenc forgot to export from its all_tests module."""

from pynenc_tests.integration.orchestrator.test_atomic_service_claim_concurrency import *
