"""Broker on the Django ORM: a table of queued invocation ids.

Popping a message claims it with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL
and MariaDB (concurrent workers take different rows instead of queueing on one lock) and
inside an IMMEDIATE transaction on SQLite. The DELETE's row count is the proof of
ownership, so a message can never be handed to two workers. On PostgreSQL, enqueueing
also sends ``NOTIFY`` so idle workers wake at once (see :mod:`pynenc_django.wakeup`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.broker.base_broker import BaseBroker
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_django.conf import ConfigBrokerDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient
from pynenc_django.wakeup import send_notify

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class DjangoBroker(DjangoBackendMixin, BaseBroker):
    """Priority queues (highest first, FIFO within a priority) in one table."""

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()

    @cached_property
    def conf(self) -> ConfigBrokerDjango:
        return ConfigBrokerDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    def _messages(self) -> Any:
        from pynenc_django.models import BrokerMessage

        return BrokerMessage.objects.using(self.db_alias).for_app(self.app.app_id)

    def _route_invocation(
        self, invocation_id: InvocationId, queue_name: str, priority: float
    ) -> None:
        self._route_invocations([invocation_id], queue_name, priority)

    @retry_transient
    def _route_invocations(
        self, invocation_ids: Sequence[InvocationId], queue_name: str, priority: float
    ) -> None:
        from pynenc_django.models import BrokerMessage

        if not invocation_ids:
            return
        now = datetime.now(UTC)
        BrokerMessage.objects.using(self.db_alias).bulk_create(
            [
                BrokerMessage(
                    app_id=self.app.app_id,
                    queue=queue_name,
                    priority=priority,
                    invocation_id=invocation_id,
                    created_at=now,
                )
                for invocation_id in invocation_ids
            ]
        )
        if self.conf.django_listen_notify and self.vendor == "postgresql":
            send_notify(self.db_alias, self.app.app_id, queue_name)

    @retry_transient
    def retrieve_invocation(self, queue_name: str | None = None) -> InvocationId | None:
        queue = self.conf.queues[0] if queue_name is None else queue_name
        self._validate_queue_names((queue,))
        head = self._messages().filter(queue=queue).order_by("-priority", "id")
        if self.connection.features.has_select_for_update_skip_locked:
            head = head.select_for_update(skip_locked=True)
        # Inside a caller's transaction (the orchestrator's claim) no savepoint is needed:
        # nothing between here and the caller can fail and be caught.
        in_caller_transaction = self.connection.in_atomic_block
        while True:
            with nullcontext() if in_caller_transaction else self.write_transaction():
                row = head.values_list("id", "invocation_id").first()
                if row is None:
                    return None
                if self._messages().filter(id=row[0]).delete()[0] == 1:
                    return InvocationId(row[1])

    @retry_transient
    def has_invocations(self, queue_name: str) -> bool:
        """A lock-free look at one queue, so idle workers need not take write locks."""
        return self._messages().filter(queue=queue_name).exists()

    @retry_transient
    def count_invocations(self, queue_names: Sequence[str] | None = None) -> int:
        queues = self.conf.queues if queue_names is None else tuple(queue_names)
        self._validate_queue_names(queues)
        if not queues:
            return 0
        return self._messages().filter(queue__in=list(queues)).count()

    @retry_transient
    def purge(self) -> None:
        self._messages().delete()
