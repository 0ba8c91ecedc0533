"""Every runner/serializer pair of pynenc's combination suite, on the Django backends."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
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


@pytest.fixture(autouse=True)
def _sigkill_takes_the_whole_runner(
    request: FixtureRequest, monkeypatch: MonkeyPatch
) -> Iterator[None]:
    """``test_runner_reroutes_on_real_os_signal[sigkill]`` kills the runner as a container dies.

    The test SIGKILLs the runner's process, then joins it for up to 30 s. pynenc's
    ProcessRunner and MultiThreadRunner fork their workers, which inherit the end of the
    pipe ``join`` waits on and, orphaned, hold it until their own timeouts: every such
    case took the whole 30 s (x 2 runners x 3 databases in CI). Here the SIGKILL reaches
    the runner's descendants too, all frozen first so that none reacts to another's
    death, as when its container is killed; the test's assertions (RUNNING recorded,
    never KILLED) are unchanged.
    """
    if "sigkill" not in request.node.name:
        yield
        return
    kill = os.kill

    def kill_tree(pid: int, signum: int) -> None:
        if signum != signal.SIGKILL:
            kill(pid, signum)
            return
        # Frozen first, then killed: one that saw another die first (its manager, its
        # parent) could still reroute what it ran, which no killed container does.
        tree: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.suspend()
        kill(pid, signum)
        for process in tree[1:]:
            with contextlib.suppress(psutil.Error):
                process.kill()

    monkeypatch.setattr(os, "kill", kill_tree)
    yield
