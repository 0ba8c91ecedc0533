"""Cron ticks as data: every tick of every cron condition fires exactly once, cluster-wide.

pynenc 0.4 fires a cron condition only when the atomic service happens to evaluate it
within ``check_window_seconds`` (60) of a tick, and records the evaluation time as the
last execution; with its 5-minute service slots most ticks of a ``* * * * *`` schedule are
dropped without a trace. Here the condition row's ``last_cron_execution`` is the last
*tick* fired, and each evaluation walks the ticks due since then:

* a tick evaluated within its condition's ``check_window_seconds`` fires on time;
* ticks that could not fire on time (every runner was down, or the atomic service was
  held by a dead runner for longer) are coalesced into **one late run**, for the newest of
  them, logged at WARNING with how many were missed; never a silent loss, never a burst;
* a condition seen for the first time fires its latest tick if that is on time, and
  otherwise starts from it (there is no history to catch up on).

Each tick is one transaction: the compare-and-set of ``last_cron_execution`` and the
valid condition it produces commit together, so a runner killed in between loses nothing
and fires nothing twice. The trigger loop then claims, routes and records each trigger
run in one transaction too (:meth:`ScheduleMixin._process_loop_iteration_body`).

Tests can run schedules on a faster clock: ``PYNENC_DJANGO_TEST_CLOCK="<epoch>:<speed>"``
makes the schedule's "now" start at ``epoch`` and run ``speed`` times faster than real
time in every process that inherits it (a runner and its workers). Never set it in
production; runners log a warning when it is set.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from croniter import croniter
from pynenc.trigger.conditions import (
    CompositeLogic,
    CronCondition,
    CronContext,
    EventContext,
    TriggerCondition,
    ValidCondition,
)
from pynenc.trigger.log_messages import TriggerLogMsg, join_tokens, ref
from pynenc.trigger.trigger_context import TriggerContext
from pynenc.trigger.trigger_definitions import TriggerDefinition

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import from_db_time, to_db_time

if TYPE_CHECKING:
    from pynenc.invocation.base_invocation import BaseInvocation
    from pynenc.orchestrator.atomic_service import AtomicServiceRun

logger = logging.getLogger("pynenc_django")

TEST_CLOCK_ENV = "PYNENC_DJANGO_TEST_CLOCK"
#: More due ticks than this since the last one fired are counted as "more than" this.
MAX_TICKS_WALKED = 10_000
#: How often a process's turns sweep old events and trigger runs (pynenc: every turn).
AUTO_PURGE_INTERVAL_SEC = 60.0


@functools.cache
def _test_clock() -> tuple[float, float] | None:
    """(real time the clock started at, speed), or None: the real clock."""
    value = os.environ.get(TEST_CLOCK_ENV, "").strip()
    if not value:
        return None
    try:
        epoch, speed = (float(part) for part in value.split(":"))
    except ValueError:
        raise ValueError(
            f"{TEST_CLOCK_ENV}={value!r}: expected '<epoch seconds>:<speed>'"
        ) from None
    return epoch, speed


def schedule_now() -> datetime:
    """The time cron schedules are evaluated at: the real UTC time, or the test clock's."""
    clock = _test_clock()
    if clock is None:
        return datetime.now(UTC)
    epoch, speed = clock
    # Every process computes the same time from the same start: they agree.
    return datetime.fromtimestamp(epoch + (time.time() - epoch) * speed, UTC)


def real_seconds_until(moment: datetime) -> float:
    """Real seconds from now until the schedule's clock shows ``moment`` (the test
    clock runs faster)."""
    seconds = (moment - schedule_now()).total_seconds()
    clock = _test_clock()
    return seconds / clock[1] if clock is not None and clock[1] > 0 else seconds


def warn_if_test_clock() -> None:
    """A runner says so when its schedules run on the test clock: never in production."""
    if _test_clock() is not None:
        logger.warning(
            "pynenc_django: %s is set: cron schedules run on a test clock, not real time",
            TEST_CLOCK_ENV,
        )


def due_ticks(expression: str, after: datetime, until: datetime) -> tuple[list[datetime], bool]:
    """The ticks of ``expression`` in ``(after, until]``, oldest first, and whether more
    than :data:`MAX_TICKS_WALKED` were skipped (only the newest ones are returned then)."""
    newest = _latest_tick(expression, until)
    if newest <= after:
        return [], False
    ticks: list[datetime] = []
    walker = croniter(expression, after)
    while len(ticks) < MAX_TICKS_WALKED:
        tick = walker.get_next(datetime)
        if tick > until:
            return ticks, False
        ticks.append(tick)
    return [*ticks[:-1], newest], True


def _latest_tick(expression: str, until: datetime) -> datetime:
    """The newest tick at or before ``until``."""
    if croniter.match(expression, until):
        return until.replace(second=0, microsecond=0)
    tick: datetime = croniter(expression, until).get_prev(datetime)
    return tick


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ScheduleMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

    def check_time_based_triggers(
        self,
        current_time: datetime | None = None,
        *,
        atomic_service_run: AtomicServiceRun,
    ) -> None:
        """Fire every cron tick due since the last one fired (see the module docstring)."""
        if not self.conf.enable_scheduler:
            return
        now = _aware(current_time) if current_time else schedule_now()
        next_tick: datetime | None = None
        for condition, last in self._cron_conditions():
            self._fire_due_ticks(condition, last, now, atomic_service_run)
            upcoming: datetime = croniter(condition.cron_expression, now).get_next(datetime)
            next_tick = upcoming if next_tick is None else min(next_tick, upcoming)
        self._next_cron_tick = next_tick

    def trigger_loop_iteration(self, atomic_service_run: AtomicServiceRun) -> None:
        """pynenc's, with its retention sweep (counts and deletes over the event and
        trigger-run tables) at most every :data:`AUTO_PURGE_INTERVAL_SEC` per process
        instead of every turn: turns come every second."""
        try:
            self._process_loop_iteration(atomic_service_run)
        finally:
            if time.monotonic() >= self._next_auto_purge:
                self._next_auto_purge = time.monotonic() + AUTO_PURGE_INTERVAL_SEC
                try:
                    self.auto_purge_events()
                except Exception:  # logged, never re-raised: as pynenc's
                    self.app.logger.exception("trigger.auto_purge_events failed")

    _next_auto_purge = 0.0
    #: What the last turn of this process saw (:meth:`idle_for_sec`).
    _turn_found_work = True
    _next_cron_tick: datetime | None = None

    def idle_for_sec(self) -> float:
        """After a turn: for how many real seconds the next one would find nothing to
        do, as far as this process knows: 0 when the turn had work (valid conditions,
        django-celery-beat's schedules, which it evaluates every turn), else until the
        next cron tick. Work announced meanwhile (events, watched statuses) and
        definitions registered elsewhere are not covered: the runner bounds the wait
        (``django_atomic_service_idle_sec``) and takes announced work at once."""
        if self._turn_found_work:
            return 0.0
        if self._next_cron_tick is None:
            return float("inf")
        return max(0.0, real_seconds_until(self._next_cron_tick))

    def _process_loop_iteration(self, atomic_service_run: AtomicServiceRun) -> None:
        self._in_turn = True
        self._turn_found_work = False
        self._next_cron_tick = None
        try:
            self._process_loop_iteration_body(atomic_service_run)
        finally:
            self._in_turn = False
            self._run_database_schedules(atomic_service_run)

    def _run_database_schedules(self, atomic_service_run: AtomicServiceRun) -> None:
        """django-celery-beat's periodic tasks, where ``pynenc_django.beat`` is installed.

        A failure there is logged and keeps no other trigger from running."""
        from django.apps import apps

        if not self.conf.enable_scheduler or not apps.is_installed("pynenc_django.beat"):
            return
        from pynenc_django.beat.scheduler import evaluate_periodic_tasks

        try:
            _, enabled = evaluate_periodic_tasks(
                self.app, schedule_now(), atomic_service_run.atomic_service_run_id
            )
            if enabled:  # their due times are evaluated every turn
                self._turn_found_work = True
        except Exception:
            self._turn_found_work = True
            logger.exception("pynenc_django: evaluating django-celery-beat's periodic tasks failed")

    @retry_transient
    def _cron_conditions(self) -> list[tuple[CronCondition, datetime | None]]:
        """Every cron condition with the last tick it fired, in one query."""
        from pynenc_django.models import TriggerConditionEntry

        rows = (
            self._rows(TriggerConditionEntry)
            .filter(context_type=CronContext.__name__)
            .order_by("id")
            .values_list("condition_json", "last_cron_execution")
        )
        found = []
        for condition_json, last in rows:
            condition = TriggerCondition.from_json(condition_json, self.app)
            if isinstance(condition, CronCondition):
                found.append((condition, from_db_time(last)))
        return found

    def _fire_due_ticks(
        self,
        condition: CronCondition,
        last: datetime | None,
        now: datetime,
        atomic_service_run: AtomicServiceRun,
    ) -> None:
        expression = condition.cron_expression
        window = timedelta(seconds=condition.check_window_seconds)
        if last is None:
            newest = _latest_tick(expression, now)
            if now - newest > window:
                # First seen between ticks: start from the latest, nothing to catch up on.
                self._store_tick(condition, None, newest, None)
                return
            self._fire_tick(condition, None, newest, now, atomic_service_run)
            return
        ticks, more = due_ticks(expression, last, now)
        late = [tick for tick in ticks if now - tick > window]
        on_time = ticks[len(late) :]
        previous = last
        if late:
            missed = len(late) - 1
            logger.warning(
                "pynenc cron %r: %d tick(s) up to %s could not run on time (no runner "
                "evaluated them within %ss); running the newest once, late by %.0fs%s",
                expression,
                len(late),
                late[-1].isoformat(),
                condition.check_window_seconds,
                (now - late[-1]).total_seconds(),
                f", and skipping the {'more than ' if more else ''}{missed} before it"
                if missed
                else "",
            )
            if not self._fire_tick(condition, previous, late[-1], now, atomic_service_run):
                return
            previous = late[-1]
        for tick in on_time:
            if not self._fire_tick(condition, previous, tick, now, atomic_service_run):
                return
            previous = tick

    def _fire_tick(
        self,
        condition: CronCondition,
        previous: datetime | None,
        tick: datetime,
        now: datetime,
        atomic_service_run: AtomicServiceRun,
    ) -> bool:
        """Move the condition from ``previous`` to ``tick`` and record the tick's valid
        condition, in one transaction; False when another runner moved it first."""
        context = CronContext(timestamp=tick, last_execution=previous)
        fired = self._store_tick(condition, previous, tick, ValidCondition(condition, context))
        self.app.logger.info(
            join_tokens(
                TriggerLogMsg.CRON_CLAIMED if fired else TriggerLogMsg.CRON_SKIPPED,
                ref("atomic-service-run", atomic_service_run.atomic_service_run_id),
                ref("condition", condition.condition_id),
                f"timestamp:{tick.isoformat()}",
                f"late_by:{max(0.0, (now - tick).total_seconds()):.0f}s"
                if fired
                else "reason:already-claimed",
            )
        )
        return fired

    @retry_transient
    def _store_tick(
        self,
        condition: CronCondition,
        previous: datetime | None,
        tick: datetime,
        valid_condition: ValidCondition | None,
    ) -> bool:
        from pynenc_django.models import TriggerConditionEntry

        rows = self._rows(TriggerConditionEntry).filter(
            condition_key=id_key(condition.condition_id)
        )
        if previous is None:
            rows = rows.filter(last_cron_execution__isnull=True)
        else:
            rows = rows.filter(last_cron_execution=to_db_time(previous))
        with self.write_transaction():
            if not rows.update(last_cron_execution=to_db_time(tick)):
                return False
            if valid_condition is not None:
                self.record_valid_conditions([valid_condition])
        return True

    # ------------------------------------------------------------------ #
    # The trigger loop
    # ------------------------------------------------------------------ #

    def _process_loop_iteration_body(self, atomic_service_run: AtomicServiceRun) -> None:
        """pynenc 0.4's loop body, with each trigger run's claim, routed invocation and
        record in one transaction.

        pynenc commits the three separately, and its claim expires after 60 s: a runner
        killed after routing the invocation and before clearing the valid condition
        left it to fire again once the claim expired. Here a trigger run either happened
        with its record or not at all, and a recorded run is never claimed again
        (:meth:`~pynenc_django.trigger.claims.ClaimsMixin.claim_trigger_run`).
        Otherwise a copy of pynenc's: ``tests/trigger/test_schedule.py`` fails when
        pynenc's changes, to be merged again.
        """
        self.check_time_based_triggers(atomic_service_run=atomic_service_run)
        valid_conditions = self.get_valid_conditions()
        if not valid_conditions:
            return
        self._turn_found_work = True
        affected_triggers: dict[str, tuple[TriggerDefinition, TriggerContext]] = {}
        condition_to_pending_triggers: dict[str, set[str]] = defaultdict(set)
        for valid_condition in valid_conditions.values():
            trigger_dtos = self.get_triggers_for_condition(valid_condition.condition.condition_id)
            for trigger_dto in trigger_dtos:
                trigger = TriggerDefinition.from_dto(trigger_dto, self.app)
                if trigger.trigger_id not in affected_triggers:
                    affected_triggers[trigger.trigger_id] = (trigger, TriggerContext())
                affected_triggers[trigger.trigger_id][1].add_valid_condition(valid_condition)
                condition_to_pending_triggers[valid_condition.valid_condition_id].add(
                    trigger.trigger_id
                )
        for trigger, ctx in affected_triggers.values():
            for execution_ctx in self._execution_contexts_for_trigger(trigger, ctx):
                for vc_id in execution_ctx.valid_conditions:
                    condition_to_pending_triggers[vc_id].discard(trigger.trigger_id)
                parent_event_id: str | None = None
                for vc in execution_ctx.valid_conditions.values():
                    inner = vc.context
                    if isinstance(inner, EventContext) and inner.event_id:
                        parent_event_id = inner.event_id
                        break
                for run_id in trigger.generate_trigger_run_ids(execution_ctx):
                    self._run_trigger_once(
                        run_id, trigger, execution_ctx, parent_event_id, atomic_service_run
                    )
                    if trigger.logic == CompositeLogic.AND:
                        break
        conditions_to_clean = [
            valid_conditions[c]
            for c in condition_to_pending_triggers
            if not condition_to_pending_triggers[c]
        ]
        self.clear_valid_conditions(conditions_to_clean)

    def _record_trigger_run(
        self,
        *,
        run_id: str,
        trigger: TriggerDefinition,
        context: TriggerContext,
        invocation: BaseInvocation,
        claimed_at: datetime,
        executed_at: datetime,
        atomic_service_run: AtomicServiceRun,
    ) -> None:
        """pynenc's, except that a failure is raised: it rolls the run back with its
        invocation, and the next turn runs it again (pynenc logs it and goes on, leaving a
        routed invocation with no record that would stop it from being routed twice)."""
        record = self._build_trigger_run_record(
            run_id, trigger, context, invocation, claimed_at, executed_at, atomic_service_run
        )
        self.store_trigger_run(record)
        if record.event_ids:
            self.link_trigger_run_to_events(
                record.event_ids, str(invocation.invocation_id), trigger_run_id=run_id
            )

    def _run_trigger_once(
        self,
        run_id: str,
        trigger: TriggerDefinition,
        execution_ctx: TriggerContext,
        parent_event_id: str | None,
        atomic_service_run: AtomicServiceRun,
    ) -> None:
        with self.write_transaction():
            if not self.claim_trigger_run(run_id):
                self.app.logger.debug(
                    join_tokens(
                        TriggerLogMsg.RUN_SKIPPED,
                        ref("atomic-service-run", atomic_service_run.atomic_service_run_id),
                        ref("trigger-run", run_id),
                        ref("trigger", trigger.trigger_id),
                        "reason:already-claimed",
                    )
                )
                return
            claimed_at = datetime.now(UTC)
            self._log_run_claimed(run_id, trigger, execution_ctx, atomic_service_run)
            invocation = self.execute_task(
                trigger.task_id,
                trigger.get_arguments(execution_ctx),
                parent_event_id=parent_event_id,
            )
            self._record_trigger_run(
                run_id=run_id,
                trigger=trigger,
                context=execution_ctx,
                invocation=invocation,
                claimed_at=claimed_at,
                executed_at=datetime.now(UTC),
                atomic_service_run=atomic_service_run,
            )
        self._log_run_executed(run_id, trigger, execution_ctx, invocation, atomic_service_run)
