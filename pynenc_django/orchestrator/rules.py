"""pynenc's state machine and concurrency rules, as the orchestrator's SQL uses them."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Final

from pynenc.conf.config_task import ConcurrencyControlType
from pynenc.invocation.status import (
    InvocationStatus,
    get_status_definition,
)
from pynenc.orchestrator.atomic_service import AtomicServiceExecutionStatus

from pynenc_django.db import is_database_error

if TYPE_CHECKING:
    from pynenc.call import Call
    from pynenc.task import Task


RUNNING = AtomicServiceExecutionStatus.RUNNING
BLOCKED = AtomicServiceExecutionStatus.BLOCKED
ABANDONED = AtomicServiceExecutionStatus.ABANDONED
OWNED_STATUSES = (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.PAUSED)
_FINAL = sorted(s.value for s in InvocationStatus.get_final_statuses())
_AVAILABLE = sorted(s.value for s in InvocationStatus.get_available_for_run_statuses())


class _Slow(Enum):
    """The sentinel's own type, so that the type checker tells it from a claim."""

    CLAIM = "slow claim"


#: ``_claim_from_queue``: the one-statement claim could not decide; take the general path.
_SLOW_CLAIM: Final = _Slow.CLAIM
DISABLED = ConcurrencyControlType.DISABLED
#: Set on a database error raised by our own write of an invocation's status or result.
STORAGE_ERROR = "pynenc_django_storage_error"


def storage_write[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """Mark database errors of this write as ours (:data:`STORAGE_ERROR`), so that pynenc,
    which records any exception raised in ``DistributedInvocation.run`` as the task's
    failure, does not end an invocation FAILED because its RUNNING or its result could
    not be stored (see :meth:`DjangoOrchestrator.set_invocation_exception`)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if is_database_error(exc):
                setattr(exc, STORAGE_ERROR, True)
            raise

    return wrapper


def concurrency_lock_name(check: str, call: Call, control: ConcurrencyControlType) -> str:
    """The named lock (:func:`~pynenc_django.db.named_locks`) that serialises pynenc's
    ``check`` ("registered" or "running") for every call that check compares with this
    one: same task and, by ``control``, same key arguments or all arguments."""
    arguments = call.serialized_args_for_concurrency_control(control) or {}
    return json.dumps([check, call.task.task_id.key, sorted(arguments.items())])


def indexes_arguments(task: Task) -> bool:
    """pynenc's condition for indexing an invocation's arguments."""
    conf = task.conf
    return conf.registration_concurrency != DISABLED or conf.running_concurrency != DISABLED


#: A transition's WHERE clause: (statuses anyone may leave, statuses only their owner may
#: leave, whether the new owner is the caller); see :func:`_transition_plan`.
Plan = tuple[tuple[str, ...], tuple[str, ...], bool]


@cache
def _transition_plan(target: InvocationStatus, has_runner: bool) -> Plan | None:
    """pynenc's state machine for ``target`` as a WHERE clause, or ``None`` if it can't be.

    Returns ``(statuses anyone may leave, statuses only their owner may leave, whether
    the new owner is the caller)``: an UPDATE matching either set is exactly a transition
    :func:`status_record_transition` allows. ``None`` when the outcome depends on more
    than the row (pynenc would raise, or the owner would be carried over unknown); the
    caller then reads, validates and writes the slow way, and pynenc raises its errors.
    """
    definition = get_status_definition(target)
    if definition.acquires_ownership and not has_runner:
        return None
    sources = [
        s for s in InvocationStatus if target in get_status_definition(s).allowed_transitions
    ]
    if definition.overrides_ownership:
        free, owned = sources, []
    else:
        free = [s for s in sources if not get_status_definition(s).requires_ownership]
        owned = [s for s in sources if get_status_definition(s).requires_ownership]
    if definition.releases_ownership:
        caller_owns = False
    elif definition.acquires_ownership or not free:
        caller_owns = True  # acquired, or kept from a source the caller had to own
    else:
        return None
    return tuple(s.value for s in free), tuple(s.value for s in owned), caller_owns


def _runner_plan(target: InvocationStatus) -> Plan:
    """The plan of a transition a runner makes, which pynenc's state machine decides
    from the row alone."""
    plan = _transition_plan(target, True)
    if plan is None:
        raise RuntimeError(f"pynenc's state machine no longer decides {target} by the row")
    return plan


#: A claim's transition.
_PENDING_PLAN = _runner_plan(InvocationStatus.PENDING)


#: The transition a result is stored with (the caller runs it).
_SUCCESS_PLAN = _runner_plan(InvocationStatus.SUCCESS)
