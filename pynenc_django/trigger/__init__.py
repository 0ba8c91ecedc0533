"""Trigger on the Django ORM: conditions, trigger definitions, cron state, run claims and
the event / trigger-run monitoring records.

Unlike pynenc's SQLite reference, every guarantee the trigger loop relies on is enforced
by the database itself, so it holds across processes and hosts:

* ``store_last_cron_execution`` is a compare-and-set (one conditional ``UPDATE``), and
  re-registering a condition never resets its cron state;
* ``claim_trigger_run`` is decided by a unique key (first insert wins) and by a
  conditional ``UPDATE`` that only takes over an expired claim;
* ``link_trigger_run_to_events`` bumps an event's triggered count only when it inserts a
  new (event, invocation) link, in the same transaction.

The lookups that run on hot paths (conditions watching a task on every status change,
runs referencing an atomic-service run on every atomic-service purge) are single indexed
queries.

One module per job, each a mixin of :class:`DjangoTrigger`:

* :mod:`.conditions`: conditions, the source-task index and the report hooks that read
  it, and the valid conditions awaiting the trigger loop;
* :mod:`.definitions`: trigger definitions and their links to conditions;
* :mod:`.schedule`: cron ticks (each exactly once, late ones coalesced) and the
  trigger loop, whose runs commit with their claim and record;
* :mod:`.claims`: the cron compare-and-set and trigger-run claims;
* :mod:`.events`: events, their links to triggered invocations, and event reads;
* :mod:`.runs`: trigger-run records and their reads;
* :mod:`.retention`: ``_purge`` and the monitoring retention;
* :mod:`.core`: what they all stand on (settings, per-process state, database access).
"""

from __future__ import annotations

from pynenc_django.trigger.claims import CLAIM_ATTEMPTS, CLAIM_PRUNE_INTERVAL_SEC, ClaimsMixin
from pynenc_django.trigger.conditions import ConditionsMixin
from pynenc_django.trigger.core import id_key
from pynenc_django.trigger.definitions import DefinitionsMixin
from pynenc_django.trigger.events import EventsMixin
from pynenc_django.trigger.retention import RetentionMixin
from pynenc_django.trigger.runs import RunsMixin
from pynenc_django.trigger.schedule import ScheduleMixin


class DjangoTrigger(
    ScheduleMixin,
    ConditionsMixin,
    DefinitionsMixin,
    ClaimsMixin,
    EventsMixin,
    RunsMixin,
    RetentionMixin,
):
    """pynenc's trigger component stored in the project's database, scoped by ``app_id``.

    Its settings, state and database access are :class:`.core.TriggerCore`'s, on which
    every mixin stands; the mixins come before pynenc's ``BaseTrigger`` in the MRO, so
    their methods override pynenc's."""


__all__ = [
    "CLAIM_ATTEMPTS",
    "CLAIM_PRUNE_INTERVAL_SEC",
    "DjangoTrigger",
    "id_key",
]
