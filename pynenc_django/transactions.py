"""Enqueue when the surrounding transaction commits, with the invocation id known now.

    with transaction.atomic():
        order = Order.objects.create(...)
        invocation = enqueue_on_commit(send_receipt, order.id)
        order.receipt_invocation_id = invocation.invocation_id   # known already
        order.save()
    # send_receipt is registered here, after COMMIT; on rollback it never exists.

Celery's ``delay_on_commit`` returns nothing, because the task id is only made at send
time. pynenc's invocation id is generated client-side, so the invocation is built now and
only *registered* (stored, routed, made visible to runners) by ``on_commit``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation
    from pynenc.task import Task


def enqueue_on_commit(task: Task, /, *args: Any, **kwargs: Any) -> DistributedInvocation:
    """Call ``task(*args, **kwargs)`` when the default database's transaction commits."""
    return enqueue_on_commit_using(None, task, *args, **kwargs)


def enqueue_on_commit_using(
    using: str | None, task: Task, /, *args: Any, **kwargs: Any
) -> DistributedInvocation:
    """:func:`enqueue_on_commit` for the transaction of database alias ``using``.

    Outside a transaction (autocommit) the invocation is registered at once, as Django's
    ``on_commit`` does. Tasks with ``registration_concurrency`` may reuse an existing
    invocation, whose id cannot be known before registering: they are rejected.
    """
    from django.db import transaction
    from pynenc import context
    from pynenc.arguments import Arguments
    from pynenc.call import Call
    from pynenc.conf.config_task import ConcurrencyControlType
    from pynenc.invocation.dist_invocation import DistributedInvocation

    if task.conf.registration_concurrency != ConcurrencyControlType.DISABLED:
        raise ValueError(
            f"{task.task_id} uses registration_concurrency, which may reuse an existing "
            "invocation chosen at registration: its id cannot be returned before commit. "
            "Call the task inside transaction.on_commit() instead."
        )
    from pynenc_django.calling.options import call_options, current_call_options
    from pynenc_django.serializer.calls import serialize_arguments_first

    app = task.app
    call: Call[..., Any] = Call(task, Arguments.from_call(task.func, *args, **kwargs))
    serialize_arguments_first([call])  # an argument that cannot be stored fails here, not at commit
    invocation = DistributedInvocation.from_parent(
        call,
        parent_invocation=context.get_dist_invocation_context(app.app_id),
        parent_event_id=context.get_trigger_event_context(app.app_id),
    )

    options = current_call_options()  # apply_async's, kept for the commit

    def register() -> None:
        with call_options(options) if options is not None else nullcontext():
            app.orchestrator.register_new_invocations([invocation])
            if task.conf.running_concurrency != ConcurrencyControlType.DISABLED:
                app.orchestrator.index_arguments_for_concurrency_control(invocation)

    transaction.on_commit(register, using=using, robust=False)
    return invocation
