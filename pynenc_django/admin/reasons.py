"""Atomic-service execution reasons, told as sentences with links.

The orchestrator stores machine strings (:mod:`pynenc_django.orchestrator.atomic_service`,
and pynenc's runner for ``exception:``); the admin reads the ids out of them here, and
shows the stored text as it is in the sentence's ``title``. A form it does not know is
shown as the stored text, escaped.

The holder of a BLOCKED row and its runner are looked up with the row itself (scalar
subqueries on the ids cut out of ``reason`` in SQL, :func:`execution_annotations`), so a
page of executions costs no query per row, nor one more per page.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.db.models import Case, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import StrIndex, Substr
from django.utils.html import format_html

from pynenc_django.admin.base import (
    annotated_runner,
    changelist_url,
    clock,
    runner_annotations,
    short_id,
)

BLOCKED_PREFIX = "prior_running:"
BLOCKED_SEPARATOR = " runner:"

BLOCKED_RE = re.compile(r"prior_running:(?P<run>\S+) runner:(?P<runner>\S+)")
REAPED_STALE_RE = re.compile(
    r"reaped: runner (?P<runner>\S+) last heartbeat (?:(?P<beat>\S+) )?is older than (?P<after>.+)"
)
REAPED_SILENT_RE = re.compile(
    r"reaped: runner (?P<runner>\S+) has no heartbeat and run (?P<run>\S+) started (?P<at>\S+)"
)
SUPERSEDED_RE = re.compile(
    r"superseded: runner (?P<runner>\S+) claimed again, run (?P<run>\S+) never finalized"
)
EXCEPTION_RE = re.compile(r"exception:(?P<name>[\w.]+)")


def execution_annotations() -> dict[str, Any]:
    """The row's runner, and for a BLOCKED row its holder run's start and runner, as
    annotations of the executions' own query (see the module docstring)."""
    from pynenc_django.models import AtomicServiceExecution

    blocked = Q(reason__startswith=BLOCKED_PREFIX, reason__contains=BLOCKED_SEPARATOR)
    separator_at = StrIndex("reason", Value(BLOCKED_SEPARATOR))
    start = len(BLOCKED_PREFIX) + 1
    holder_run = Case(
        When(blocked, then=Substr("reason", start, separator_at - start)), default=Value(None)
    )
    holder_runner = Case(
        When(blocked, then=Substr("reason", separator_at + len(BLOCKED_SEPARATOR))),
        default=Value(None),
    )
    holder = AtomicServiceExecution.objects.filter(
        app_id=OuterRef("app_id"), run_id=OuterRef("holder_run")
    )
    return {
        **runner_annotations("runner", OuterRef("runner_id")),
        "holder_run": holder_run,
        "holder_runner": holder_runner,
        "holder_start": Subquery(holder.values("start_time")[:1]),
        **runner_annotations("holder", OuterRef("holder_runner")),
    }


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def _run_link(app_id: str, run_id: str) -> str:
    from pynenc_django.models import AtomicServiceExecution

    url = changelist_url(AtomicServiceExecution, app_id=app_id, q=run_id)
    return format_html(
        '<a href="{}" title="run {}"><code>{}</code></a>', url, run_id, short_id(run_id)
    )


def _iso_clock(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return clock(datetime.datetime.fromisoformat(text))
    except ValueError:
        return None


def reason_sentence(row: Any) -> str:
    """The sentence for a row of :func:`execution_annotations` (a model instance or a
    ``.values()`` dict); ``""`` when the reason is of no known form."""
    app_id, reason = _get(row, "app_id"), _get(row, "reason") or ""
    own_runner_id = _get(row, "runner_id")
    own_runner = annotated_runner(row, app_id, own_runner_id, "runner")
    if m := BLOCKED_RE.fullmatch(reason):
        run, holder_id = m["run"], m["runner"]
        if run == "None":  # the slot was freed between the claim and the look at its holder
            return "Blocked: another run held the atomic-service slot at that moment."
        holder = (
            annotated_runner(row, app_id, holder_id, "holder")
            if holder_id == _get(row, "holder_runner")
            else annotated_runner({}, app_id, holder_id, "holder")
        )
        start = _get(row, "holder_start")
        since = format_html(" since {}", clock(start)) if start else ""
        return format_html(
            "Blocked: run {} of the atomic services was still running on runner {}{}.",
            _run_link(app_id, run),
            holder,
            since,
        )
    if (m := REAPED_STALE_RE.fullmatch(reason)) and m["runner"] == own_runner_id:
        beat = _iso_clock(m["beat"])
        last = format_html(" (last at {})", beat) if beat else ""
        return format_html(
            "Abandoned: runner {} stopped sending heartbeats{}, and a run is given up after "
            "{} without one; the next claim ended it.",
            own_runner,
            last,
            m["after"],
        )
    if (m := REAPED_SILENT_RE.fullmatch(reason)) and m["runner"] == own_runner_id:
        started = _iso_clock(m["at"])
        return format_html(
            "Abandoned: runner {} had no heartbeat left{}; the next claim ended this run.",
            own_runner,
            format_html(" (the run started at {})", started) if started else "",
        )
    if (m := SUPERSEDED_RE.fullmatch(reason)) and m["runner"] == own_runner_id:
        return format_html(
            "Abandoned: runner {} claimed the slot again before this run was finalized "
            "(its end was never recorded, say the database went away at that moment).",
            own_runner,
        )
    if m := EXCEPTION_RE.fullmatch(reason):
        return format_html("Abandoned: the run raised {} on runner {}.", m["name"], own_runner)
    return ""


def reason_html(row: Any, *, raw_line: bool = False) -> str:
    """The reason as a sentence, the stored text in its ``title`` (and, with
    ``raw_line``, on a line of its own); an unknown form as the stored text, escaped."""
    reason = _get(row, "reason") or ""
    if not reason:
        return format_html('<span class="pynenc-reason">{}</span>', "-")
    sentence = reason_sentence(row)
    if not sentence:
        return format_html('<span class="pynenc-reason">{}</span>', reason)
    raw = (
        format_html('<br><small class="pynenc-raw-reason">stored: <code>{}</code></small>', reason)
        if raw_line
        else ""
    )
    return format_html('<span class="pynenc-reason" title="{}">{}</span>{}', reason, sentence, raw)
