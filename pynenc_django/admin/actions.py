"""What the admin's invocation actions do, apart from HTTP: rerun, cancel and reroute.

The web process never deserializes stored arguments (it imports a task module only to
check that a rerun's task still resolves, see :func:`task_import_error`), so these
do not go through ``orchestrator.set_invocation_status`` (its trigger report builds a
``StatusContext`` from the deserialized arguments). They make the same writes through
the Django backends: the status change validated by pynenc's state machine
(``status_record_transition``, ownership rules included) under a row lock, the history
record with the admin user's runner context, waiter release and auto-purge on final
statuses, and routing through the broker. When a task has status triggers, evaluating
them needs its arguments deserialized, so the admin refuses and says so.

Which transitions are offered follows ``pynenc/invocation/status.py``:

* **cancel**: pynenc 0.4 has no cancelled status. ``KILLED`` needs the owning runner and
  is not final, so the only transition a non-owner can make into a final status is
  ``REGISTERED -> CONCURRENCY_CONTROLLED_FINAL``: a registered invocation that never ran.
* **reroute**: ``KILLED`` and ``CONCURRENCY_CONTROLLED`` go to ``REROUTED``; ``PENDING``
  past ``max_pending_seconds`` and ``RUNNING`` whose runner is dead go through pynenc's
  recovery statuses (which override ownership), as its recovery tasks do. A live
  runner's invocation is never taken from it.
* **rerun**: a new invocation of the same call (same serialized arguments), registered
  and routed like pynenc does, whose REGISTERED history record names the original
  (``registered_by_inv_id``) and the admin user (its runner context). An invocation
  whose task this process cannot resolve is refused (see :func:`task_import_error`):
  after a deploy renamed or removed a task, a rerun would only queue another invocation
  that no worker can load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord

from pynenc_django.admin.config import build_app, db_alias, pynenc_conf, task_route
from pynenc_django.db import write_transaction

if TYPE_CHECKING:
    from django.http import HttpRequest
    from pynenc.runner.runner_context import RunnerContext

    from pynenc_django.models import Invocation

#: Most invocations one action may touch; "select all" on a million rows is refused.
MAX_SELECTED = 500

ADMIN_RUNNER_CLS = "DjangoAdmin"
S = InvocationStatus
#: Statuses in which an invocation belongs to a runner (pynenc's ownership rules).
OWNED_STATUSES = (S.PENDING, S.RUNNING, S.PAUSED)


@dataclass
class Outcome:
    """What an action did, or would do, to one invocation."""

    invocation: Invocation
    ok: bool
    message: str
    new_invocation_id: str | None = None
    queue: str | None = None


def admin_runner_context(user: Any) -> RunnerContext:
    """The runner context history records of admin actions carry: it names the user."""
    from pynenc_django.calling.revoke import requester_context

    return requester_context(ADMIN_RUNNER_CLS, f"django-admin:{user.get_username()}")


def status_triggers(app_id: str, task_id_keys: set[str]) -> set[str]:
    """Tasks among ``task_id_keys`` that status conditions of triggers watch."""
    from pynenc_django.models import TriggerConditionEntry, TriggerSourceTaskCondition

    alias = db_alias()
    watched = TriggerSourceTaskCondition.objects.using(alias).filter(
        app_id=app_id, task_id_key__in=list(task_id_keys)
    )
    status_keys = TriggerConditionEntry.objects.using(alias).filter(
        app_id=app_id, context_type="StatusContext"
    )
    return set(
        watched.filter(condition_key__in=status_keys.values("condition_key")).values_list(
            "task_id_key", flat=True
        )
    )


TRIGGER_REFUSAL = (
    "task {task} has status triggers; evaluating them needs the invocation's arguments "
    "deserialized, which the admin never does in the web process. Do this from code "
    "(app.orchestrator.set_invocation_status) instead."
)


def _owner_is_dead(inv: Invocation, request: HttpRequest | None) -> tuple[bool, str]:
    from pynenc_django.models import RunnerHeartbeat

    minutes = float(pynenc_conf(inv.app_id, request).runner_considered_dead_after_minutes)
    last = (
        RunnerHeartbeat.objects.using(db_alias())
        .filter(app_id=inv.app_id, runner_id=inv.status_runner_id)
        .values_list("last_heartbeat", flat=True)
        .first()
    )
    if last is None:
        return True, f"runner {inv.status_runner_id} has no heartbeat"
    if last < timezone.now() - timedelta(minutes=minutes):
        return (
            True,
            f"runner {inv.status_runner_id} last heartbeat {last:%Y-%m-%d %H:%M:%S} is older than {minutes:g} min",
        )
    return False, f"runner {inv.status_runner_id} is alive (heartbeat {last:%H:%M:%S})"


def reroute_path(inv: Invocation, request: HttpRequest | None = None) -> tuple[list[S], str]:
    """The statuses a reroute goes through, or ``[]`` and why it is not allowed."""
    status = S(inv.status)
    if status in (S.KILLED, S.CONCURRENCY_CONTROLLED):
        return [S.REROUTED], f"{status.value} -> rerouted"
    if status == S.PENDING:
        max_pending = float(pynenc_conf(inv.app_id, request).max_pending_seconds)
        if inv.status_timestamp < timezone.now() - timedelta(seconds=max_pending):
            return [S.PENDING_RECOVERY, S.REROUTED], f"pending longer than {max_pending:g} s"
        dead, why = _owner_is_dead(inv, request)
        if dead:
            return [S.PENDING_RECOVERY, S.REROUTED], why
        return [], f"pending for less than {max_pending:g} s and {why}"
    if status == S.RUNNING:
        dead, why = _owner_is_dead(inv, request)
        if dead:
            return [S.RUNNING_RECOVERY, S.REROUTED], why
        return [], f"{why}: only it may change a running invocation"
    return [], f"pynenc does not reroute a {status.value} invocation"


def cancel_check(inv: Invocation) -> tuple[bool, str]:
    if inv.status == S.REGISTERED.value:
        return True, "registered -> concurrency_controlled_final (never runs)"
    if inv.status in (S.PENDING.value, S.RUNNING.value, S.PAUSED.value):
        return False, "only its owning runner may kill a pending, running or paused invocation"
    return False, f"pynenc has no cancel transition from {inv.status}"


def task_import_error(app_id: str, task_id_key: str) -> str | None:
    """Why a worker could not load task ``task_id_key`` of ``app_id``, as far as this
    process can tell, or ``None`` when it resolves.

    Resolves the task the way a worker does (``pynenc.task.Task.from_id``): a task
    registered in the app in this process (the project's tasks are autodiscovered at
    start-up) resolves without any import; otherwise its module is imported by name and
    the attribute looked up, which must be a pynenc task. Importing a module runs only
    code installed in this process, found by the module name of the stored key; nothing
    stored (arguments, results) is deserialized. The web process and the workers should
    run the same code, so "cannot be imported here" is the best available sign that a
    deploy renamed or removed the task.
    """
    import importlib

    from pynenc import Pynenc
    from pynenc.core_tasks import CoreTaskFunction
    from pynenc.identifiers.task_id import TaskId
    from pynenc.task import Task

    def registered() -> bool:
        app = Pynenc._instances.get(app_id)
        return app is not None and any(tid.key == task_id_key for tid in list(app.tasks))

    if registered():
        return None
    try:
        task_id = TaskId.from_key(task_id_key)
        function = getattr(importlib.import_module(task_id.module), task_id.func_name)
    except Exception as exc:  # whatever the import raises is what a worker would hit
        return f"{type(exc).__name__}: {exc}"
    if isinstance(function, Task | CoreTaskFunction) or registered():
        return None
    # Wrappers that hold their task (pynenc's direct_task, migration shims), as pynenc scans.
    if any(isinstance(value, Task) for value in getattr(function, "__dict__", {}).values()):
        return None
    return f"ValueError: {task_id_key} is a {type(function).__name__}, not a pynenc task"


def _transition(app: Any, inv: Invocation, status: S, ctx: RunnerContext) -> None:
    """pynenc's ``set_invocation_status`` without the trigger report (see module doc)."""
    app.orchestrator.record_status_change(inv.invocation_id, status, ctx)


def cancel(invocations: list[Invocation], user: Any) -> list[Outcome]:
    from pynenc_django.models import BrokerMessage, DelayedMessage

    outcomes = []
    ctx = admin_runner_context(user)
    for inv in invocations:
        ok, why = cancel_check(inv)
        if ok and status_triggers(inv.app_id, {inv.task_id_key}):
            ok, why = False, TRIGGER_REFUSAL.format(task=inv.task_id_key)
        if not ok:
            outcomes.append(Outcome(inv, False, why))
            continue
        app = build_app(inv.app_id)
        try:
            with write_transaction(db_alias()):
                _transition(app, inv, S.CONCURRENCY_CONTROLLED_FINAL, ctx)
                # Runners would drop the message anyway; removing it keeps queue depth true
                # (and a delayed one is never promoted).
                for model in (BrokerMessage, DelayedMessage):
                    model.objects.using(db_alias()).filter(
                        app_id=inv.app_id, invocation_id=inv.invocation_id
                    ).delete()
        except Exception as exc:  # a status that moved meanwhile: report, do not crash
            outcomes.append(Outcome(inv, False, f"not cancelled: {exc}"))
            continue
        outcomes.append(Outcome(inv, True, "cancelled (concurrency_controlled_final)"))
    return outcomes


def reroute(invocations: list[Invocation], user: Any, queue: str | None = None) -> list[Outcome]:
    outcomes = []
    ctx = admin_runner_context(user)
    for inv in invocations:
        path, why = reroute_path(inv)
        if path and status_triggers(inv.app_id, {inv.task_id_key}):
            path, why = [], TRIGGER_REFUSAL.format(task=inv.task_id_key)
        if not path:
            outcomes.append(Outcome(inv, False, why))
            continue
        app = build_app(inv.app_id)
        route = task_route(inv.app_id, inv.task_id_key)
        target = queue or route.queue
        try:
            with write_transaction(db_alias()):
                for status in path:
                    _transition(app, inv, status, ctx)
                app.broker.route_invocation(inv.invocation_id, target, route.priority)
        except Exception as exc:
            outcomes.append(Outcome(inv, False, f"not rerouted: {exc}"))
            continue
        outcomes.append(Outcome(inv, True, f"rerouted to queue {target} ({why})", queue=target))
    return outcomes


def rerun(invocations: list[Invocation], user: Any, queue: str | None = None) -> list[Outcome]:
    """New invocations of the same calls, built from stored rows only (no task code)."""
    from pynenc.identifiers.call_id import CallId
    from pynenc.identifiers.invocation_id import InvocationId, generate_invocation_id
    from pynenc.identifiers.task_id import TaskId
    from pynenc.models.call_dto import CallDTO
    from pynenc.models.invocation_dto import InvocationDTO
    from pynenc.state_backend.base_state_backend import InvocationHistory
    from pynenc.workflow.workflow_identity import WorkflowIdentity

    from pynenc_django.models import Invocation as InvocationRow
    from pynenc_django.models import InvocationArgument, StateInvocation
    from pynenc_django.utils import sha256_hex

    alias = db_alias()
    ctx = admin_runner_context(user)
    outcomes = []
    import_errors: dict[tuple[str, str], str | None] = {}
    for inv in invocations:
        task = (inv.app_id, inv.task_id_key)
        if task not in import_errors:
            import_errors[task] = task_import_error(*task)
        if import_errors[task] is not None:
            outcomes.append(
                Outcome(
                    inv,
                    False,
                    f"not rerun: task {inv.task_id_key} cannot be imported here "
                    f"({import_errors[task]})",
                )
            )
            continue
        state = (
            StateInvocation.objects.using(alias)
            .filter(app_id=inv.app_id, invocation_id=inv.invocation_id)
            .values("call_id_key", "serialized_arguments", "workflow_id", "workflow_type_key")
            .first()
        )
        route = task_route(inv.app_id, inv.task_id_key)
        if state is None:
            outcomes.append(Outcome(inv, False, "its call is not in the state backend (purged?)"))
            continue
        if route.registration_concurrency:
            outcomes.append(
                Outcome(
                    inv,
                    False,
                    f"task {inv.task_id_key} has registration concurrency control, which "
                    "may reuse an existing invocation: call it from code instead",
                )
            )
            continue
        if status_triggers(inv.app_id, {inv.task_id_key}):
            outcomes.append(Outcome(inv, False, TRIGGER_REFUSAL.format(task=inv.task_id_key)))
            continue
        app = build_app(inv.app_id)
        target = queue or route.queue
        new_id = InvocationId(generate_invocation_id())
        call_id = CallId.from_key(state["call_id_key"])
        arguments = json.loads(state["serialized_arguments"])
        workflow = None
        workflow_type_key = state["workflow_type_key"]  # set wherever workflow_id is
        if state["workflow_id"] and state["workflow_id"] == inv.invocation_id and workflow_type_key:
            # A workflow root starts a new workflow run; a task inside one runs standalone.
            workflow = WorkflowIdentity(
                workflow_id=new_id,
                workflow_type=TaskId.from_key(workflow_type_key),
                parent_workflow_id=None,
            )
        record = InvocationStatusRecord(S.REGISTERED, None)
        try:
            with write_transaction(alias):
                app.state_backend.upsert_invocation_dtos(
                    [
                        (
                            InvocationDTO(
                                invocation_id=new_id,
                                call_id=call_id,
                                workflow=workflow,
                                parent_invocation_id=None,
                            ),
                            CallDTO(call_id=call_id, serialized_arguments=arguments),
                        )
                    ]
                )
                if workflow is not None:
                    app.state_backend.store_workflow_run(workflow)
                InvocationRow.objects.using(alias).create(
                    app_id=inv.app_id,
                    invocation_id=new_id,
                    task_id_key=inv.task_id_key,
                    call_id_key=call_id.key,
                    status=record.status.value,
                    status_runner_id=None,
                    status_timestamp=record.timestamp,
                    registered_at=record.timestamp,
                )
                if route.concurrency_control:
                    InvocationArgument.objects.using(alias).bulk_create(
                        [
                            InvocationArgument(
                                app_id=inv.app_id,
                                invocation_id=new_id,
                                arg_key=key,
                                value_hash=sha256_hex(value),
                                arg_value=value,
                            )
                            for key, value in arguments.items()
                        ]
                    )
                app.state_backend.store_runner_context(ctx)
                app.state_backend.insert_histories(
                    [
                        (
                            new_id,
                            InvocationHistory(
                                invocation_id=new_id,
                                status_record=record,
                                runner_context_id=ctx.runner_id,
                                registered_by_inv_id=inv.invocation_id,
                            ),
                        )
                    ]
                )
                app.broker.route_invocation(new_id, target, route.priority)
        except Exception as exc:
            outcomes.append(Outcome(inv, False, f"not rerun: {exc}"))
            continue
        outcomes.append(Outcome(inv, True, f"rerun as {new_id} on queue {target}", new_id, target))
    return outcomes
