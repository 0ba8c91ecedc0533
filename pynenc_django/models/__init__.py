"""Django models for every pynenc component, one module per component."""

from pynenc_django.models.broker import BrokerMessage, DelayedMessage
from pynenc_django.models.client_data_store import ClientData
from pynenc_django.models.orchestrator import (
    AtomicServiceExecution,
    AtomicServiceGate,
    BlockingEdge,
    Invocation,
    InvocationArgument,
    RevokeRequest,
    RunnerHeartbeat,
)
from pynenc_django.models.state_backend import *  # noqa: F403
from pynenc_django.models.trigger import *  # noqa: F403

__all__ = [
    "AtomicServiceExecution",
    "AtomicServiceGate",
    "BlockingEdge",
    "BrokerMessage",
    "ClientData",
    "DelayedMessage",
    "Invocation",
    "InvocationArgument",
    "RevokeRequest",
    "RunnerHeartbeat",
]
