"""Delayed messages: invocations queued for a time (``apply_async(countdown=...)``, a
retry's backoff).

They wait in their own table (:class:`~pynenc_django.models.DelayedMessage`) and move to
the queue once due (:meth:`DelayedMixin.promote_due`), in one statement on PostgreSQL, by
whichever worker sees them due first; the claim itself is unchanged. Idle workers sleep
until the earliest due time (:meth:`DelayedMixin.next_due`) instead of polling: a new
delayed message is announced like a queued one (``NOTIFY`` with its due time as the
payload, a signal file elsewhere), so a worker asleep learns of an earlier due time at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.utils.dateparse import parse_datetime
from pynenc.broker.base_broker import BaseBroker
from pynenc.identifiers.invocation_id import InvocationId

from pynenc_django.db import (
    DjangoBackendMixin,
    StatementPart,
    combine_parts,
    gathered,
    insert_rows,
    retry_transient,
)
from pynenc_django.wakeup import (
    DUE_PAYLOAD,
    due_signal,
    notify_channel,
    signal_after_commit,
    signal_path,
    work_signal,
)

if TYPE_CHECKING:
    from pynenc_django.conf import ConfigBrokerDjango

#: Messages one promotion moves; a worker that moved this many promotes again at once.
PROMOTE_CHUNK = 1000
#: Shortest time between two look-ups of the earliest due time prompted by announcements
#: that carry no time (signal files): a burst of delayed submits costs one look.
UNKNOWN_LOOK_SEC = 0.1


class DelayedMixin(DjangoBackendMixin, BaseBroker):
    """Part of :class:`~pynenc_django.broker.DjangoBroker`; see the module docstring."""

    if TYPE_CHECKING:

        @property
        def conf(self) -> ConfigBrokerDjango: ...

    @cached_property
    def _work_signal(self) -> str | None:
        """SQLite: the file idle workers watch for new messages (:mod:`.wakeup`)."""
        if not self.conf.django_listen_notify:
            return None
        return signal_path(self.db_alias, work_signal(self.app.app_id))

    @cached_property
    def _due_clocks(self) -> weakref.WeakSet[DueClock]:
        return weakref.WeakSet()

    def _delayed(self) -> Any:
        from pynenc_django.models import DelayedMessage

        return DelayedMessage.objects.using(self.db_alias).for_app(self.app.app_id)

    @retry_transient
    def route_delayed(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
        due_at: datetime,
    ) -> None:
        """Queue ``invocation_ids`` on ``queue_name`` once ``due_at`` has passed."""
        from pynenc_django.models import DelayedMessage

        self._validate_queue_names((queue_name,))
        if not invocation_ids:
            return
        now = datetime.now(UTC)
        for clock in list(self._due_clocks):  # this process's own workers know at once
            clock.hear(due_at.timestamp(), False)
        if self.conf.django_listen_notify and self.dialect.notifies:
            self._insert_delayed_and_notify(invocation_ids, queue_name, priority, due_at, now)
            return
        insert_rows(
            self.db_alias,
            DelayedMessage,
            [
                DelayedMessage(
                    app_id=self.app.app_id,
                    queue=queue_name,
                    priority=priority,
                    invocation_id=invocation_id,
                    due_at=due_at,
                    created_at=now,
                )
                for invocation_id in invocation_ids
            ],
        )
        signal_after_commit(self.db_alias, self._due_signal)

    @cached_property
    def _due_signal(self) -> str | None:
        """SQLite (and this host on MariaDB): the file idle workers watch for new delayed
        messages, so they look up the earliest due time again."""
        if not self.conf.django_listen_notify:
            return None
        return signal_path(self.db_alias, due_signal(self.app.app_id))

    def _insert_delayed_and_notify(
        self,
        invocation_ids: Sequence[InvocationId],
        queue_name: str,
        priority: float,
        due_at: datetime,
        now: datetime,
    ) -> None:
        """PostgreSQL: the INSERT and a ``NOTIFY`` carrying the due time, one statement
        (gathered into the submit's one statement, :func:`one_statement`)."""
        from pynenc_django.models import DelayedMessage

        table = self._table(DelayedMessage)
        part = StatementPart(
            f"INSERT INTO {table} (app_id, queue, priority, invocation_id, due_at, created_at) "
            "SELECT %s, %s, %s, unnest(%s::text[]), %s, %s RETURNING 1",
            [self.app.app_id, queue_name, priority, list(invocation_ids), due_at, now],
            self.prepares,
            "SELECT pg_notify(%s, %s) FROM (SELECT count(*) FROM {cte}) AS n",
            [notify_channel(self.app.app_id), f"{DUE_PAYLOAD}{due_at.timestamp():.6f}"],
        )
        parts = gathered(self.db_alias)
        if parts is not None:
            parts.append(part)
            return
        sql, params = combine_parts([part])
        with self._cursor(prepare=part.prepare) as cursor:
            cursor.execute(sql, params)

    @cached_property
    def _seen(self) -> threading.local:
        return threading.local()

    def saw_due(self, value: Any) -> None:
        """Note the earliest due time a statement read along (a raw column value: a
        datetime, or SQLite's text), for this thread's :class:`DueClock`."""
        if isinstance(value, str):
            value = parse_datetime(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        self._seen.due = (time.monotonic(), None if value is None else value.timestamp())

    def seen_due(self) -> tuple[float, float | None] | None:
        """``(when, earliest due time)`` as this thread's last :meth:`saw_due` noted."""
        seen: tuple[float, float | None] | None = getattr(self._seen, "due", None)
        return seen

    @retry_transient
    def next_due(self) -> datetime | None:
        """The earliest due time of the app's delayed messages, if any (one indexed read)."""
        from django.db.models import Min

        due: datetime | None = self._delayed().aggregate(due=Min("due_at"))["due"]
        return due

    @retry_transient
    def promote_due(self, now: datetime | None = None) -> int:
        """Move up to :data:`PROMOTE_CHUNK` delayed messages due by ``now`` to their
        queues, each at its due time's place (it was "queued" then), and announce them;
        how many moved. Workers racing here move different messages (PostgreSQL and
        MariaDB skip each other's locked rows; SQLite has one writer)."""
        now = now or datetime.now(UTC)
        if self.dialect.writes_in_ctes:
            return self._promote_in_one_statement(now)
        from pynenc_django.models import BrokerMessage

        with self.write_transaction():
            due = self._delayed().filter(due_at__lte=now).order_by("due_at", "id")
            if self.connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True)
            rows = list(
                due.values_list("id", "queue", "priority", "invocation_id", "due_at")[
                    :PROMOTE_CHUNK
                ]
            )
            if not rows:
                return 0
            insert_rows(
                self.db_alias,
                BrokerMessage,
                [
                    BrokerMessage(
                        app_id=self.app.app_id,
                        queue=queue,
                        priority=priority,
                        invocation_id=invocation_id,
                        created_at=due_at,
                    )
                    for _, queue, priority, invocation_id, due_at in rows
                ],
            )
            self._delayed().filter(id__in=[row[0] for row in rows]).delete()
            signal_after_commit(self.db_alias, self._work_signal)
        return len(rows)

    def _promote_in_one_statement(self, now: datetime) -> int:
        from pynenc_django.models import BrokerMessage, DelayedMessage

        notify = bool(self.conf.django_listen_notify)
        sql = self.dialect.promote_due_sql(
            self._table(DelayedMessage), self._table(BrokerMessage), notify
        )
        params: list[Any] = [self.app.app_id, now, PROMOTE_CHUNK, self.app.app_id]
        if notify:
            params.append(notify_channel(self.app.app_id))
        with self.write_transaction():
            rows = self._fetch(sql, params)
        return int(rows[0][0]) if rows else 0

    @retry_transient
    def delayed_due_at(self, invocation_id: InvocationId) -> datetime | None:
        """When a delayed invocation is due, or ``None`` if it is not waiting for a time."""
        found: datetime | None = (
            self._delayed()
            .filter(invocation_id=invocation_id)
            .values_list("due_at", flat=True)
            .first()
        )
        return found

    @retry_transient
    def cancel_delayed(self, invocation_id: InvocationId) -> int:
        """Drop an invocation's delayed and queued messages (inside the caller's
        transaction, with its final status); how many."""
        from pynenc_django.models import BrokerMessage

        dropped, _ = self._delayed().filter(invocation_id=invocation_id).delete()
        queued, _ = (
            BrokerMessage.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(invocation_id=invocation_id)
            .delete()
        )
        return int(dropped) + int(queued)

    def count_delayed(self) -> int:
        return int(self._delayed().count())

    def purge_delayed(self) -> None:
        self._delayed().delete()


class DueClock:
    """One process's idea of its app's earliest due time, so that it promotes delayed
    messages when they are due without looking every time: looked up at most every
    ``refresh_sec`` (and after each promotion), and lowered at once by what waits hear
    (:meth:`~pynenc_django.wakeup.Waiter.take_due_news`)."""

    def __init__(self, broker: DelayedMixin, refresh_sec: float, retry_sec: float = 0.05) -> None:
        self.broker = broker
        self.refresh_sec = refresh_sec
        self.retry_sec = retry_sec
        self._retry_at = 0.0
        broker._due_clocks.add(self)
        #: Epoch seconds; ``None``: nothing delayed (as last looked up).
        self.next_due: float | None = None
        self._looked_at: float | None = None  # time.monotonic() of the last look-up
        self._heard_at = 0.0
        #: A wait heard of a delayed message without its time (a signal file): look it
        #: up, at most every :data:`UNKNOWN_LOOK_SEC` (a burst of submits, one look).
        self._unknown = False

    def hear(self, due: float | None, unknown: bool) -> None:
        """What a wait heard: a due time, or that one must be looked up."""
        if unknown:
            self._unknown = True
        if due is not None and (self.next_due is None or due < self.next_due):
            self.next_due = due
            self._heard_at = time.monotonic()  # a look older than this did not see it

    def _look_due(self) -> bool:
        if self._looked_at is None:
            return True
        age = time.monotonic() - self._looked_at
        return age >= self.refresh_sec or (self._unknown and age >= UNKNOWN_LOOK_SEC)

    def _look_up(self) -> None:
        due = self.broker.next_due()
        self.next_due = None if due is None else due.timestamp()
        self._looked_at = time.monotonic()
        self._unknown = False

    def promote_if_due(self) -> int:
        """Promote what is due (one statement, or none when nothing is); how many moved."""
        seen = self.broker.seen_due()  # read along with a look at the queue, if newer
        if (
            seen is not None
            and self._looked_at is not None
            and seen[0] > max(self._looked_at, self._heard_at)
        ):
            self._looked_at, self.next_due = seen
        if self._look_due():
            self._look_up()
        now = time.time()
        if self.next_due is None or self.next_due > now or now < self._retry_at:
            return 0
        moved = self.broker.promote_due()
        if moved < PROMOTE_CHUNK:
            self._look_up()
        if moved == 0 and self.next_due is not None and self.next_due <= time.time():
            # Due, but another transaction holds it (a worker promoting it, a revoke in
            # progress): look again shortly, not in a busy loop.
            self._retry_at = time.time() + self.retry_sec
        return moved

    def is_due(self) -> bool:
        return self.next_due is not None and self.next_due <= time.time()

    def seconds_until_due(self) -> float | None:
        """How long a wait may last before something is due (``None``: no limit). The
        waits' own timeouts bound it too: every idle poll or safety poll looks again."""
        limit = None
        if self.next_due is not None:
            limit = max(0.0, self.next_due - time.time(), self._retry_at - time.time())
        if self._unknown and self._looked_at is not None:
            until_look = max(0.0, self._looked_at + UNKNOWN_LOOK_SEC - time.monotonic())
            limit = until_look if limit is None else min(limit, until_look)
        return limit
