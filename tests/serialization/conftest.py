"""The runner tests' fixtures (the project's app, real runner processes), and the tasks
of ``tests/project/jobs/payloads.py``."""

from __future__ import annotations

from types import ModuleType

import pytest
from pynenc import Pynenc

from tests.runner.conftest import app, runners, tasks  # noqa: F401  (fixtures)


@pytest.fixture
def payloads(app: Pynenc) -> ModuleType:  # noqa: F811
    from tests.project.jobs import payloads as module

    return module


def stored_rows(app: Pynenc) -> dict[str, int]:  # noqa: F811
    """How many rows the app has, per table a call writes (none for a refused call)."""
    from pynenc_django.models import (
        BrokerMessage,
        ClientData,
        Invocation,
        InvocationArgument,
        StateInvocation,
    )

    models = (Invocation, StateInvocation, BrokerMessage, InvocationArgument, ClientData)
    return {model.__name__: model.objects.for_app(app.app_id).count() for model in models}
