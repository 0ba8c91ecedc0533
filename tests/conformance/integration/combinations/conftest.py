"""Every runner/serializer pair of pynenc's combination suite, on the Django backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from _pytest.monkeypatch import MonkeyPatch
from pynenc import Pynenc, PynencBuilder
from pynenc.serializer.base_serializer import BaseSerializer
from pynenc.util.subclasses import get_all_subclasses
from pynenc_tests.util import get_module_name
from pynenc_tests.util.subclasses import get_runner_subclasses

from pynenc_django.builder import COMPONENT_CLASSES

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest


@dataclass(frozen=True)
class AppComponents:
    serializer: type
    runner: type

    @property
    def combination_id(self) -> str:
        runner = self.runner.__name__.replace("Runner", "")
        serializer = self.serializer.__name__.replace("Serializer", "")
        return f"Django {runner} {serializer}"


def build_test_combinations() -> list[AppComponents]:
    runners = sorted(get_runner_subclasses(), key=lambda cls: cls.__name__)
    serializers = sorted(get_all_subclasses(BaseSerializer), key=lambda cls: cls.__name__)  # type: ignore[type-abstract]
    return [AppComponents(serializers[i % len(serializers)], r) for i, r in enumerate(runners)]


@pytest.fixture(params=build_test_combinations(), ids=lambda comp: comp.combination_id)
def app_combination_instance(
    request: FixtureRequest, app_instance_builder: PynencBuilder, monkeypatch: MonkeyPatch
) -> Pynenc:
    components: AppComponents = request.param
    module, name = get_module_name(request)
    app_id = f"{module}.{name}"
    # Runner processes that build ``Pynenc()`` from scratch see only the environment.
    env = {
        "APP_ID": app_id,
        "SERIALIZER_CLS": components.serializer.__name__,
        "RUNNER_CLS": components.runner.__name__,
        "LOGGING_LEVEL": "info",
        "PRINT_ARGUMENTS": "False",
        "RUNNER_LOOP_SLEEP_TIME_SEC": "0.01",
        "INVOCATION_WAIT_RESULTS_SLEEP_TIME_SEC": "0.01",
        **{key.upper(): value for key, value in COMPONENT_CLASSES.items()},
    }
    for key, value in env.items():
        monkeypatch.setenv(f"PYNENC__{key}", value)
    builder = app_instance_builder.app_id(app_id)
    builder._config["serializer_cls"] = components.serializer.__name__
    builder._config["runner_cls"] = components.runner.__name__
    app = builder.build()
    app.purge()
    return app
