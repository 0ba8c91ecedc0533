"""The read-only ModelAdmin every pynenc table uses, and what keeps it fast at scale.

pynenc's rows are written by machines: the admin never offers add, change or delete
forms, only explicit actions behind their own permissions. Every list is scoped to one
``app_id`` (the leading column of every index), counts are capped or estimated, filter
choices come from index skip scans or fixed enums, lists page through their first
:data:`PAGED_ROWS` rows only, and deep pages fetch their keys through the ordering index
before the rows.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import json
import math
import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connections
from django.db import models as db_models
from django.db.models import Field, Model, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.expressions import Combinable, OrderBy
from django.db.models.functions import Coalesce, NullIf
from django.http import HttpRequest
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from pynenc_django.admin.config import db_alias, project_app_id, request_cache
from pynenc_django.admin.sql import MAX_CHOICES, distinct_values, estimated_count, fast_count
from pynenc_django.vendors import vendor_of

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices

#: Exact counts up to this many rows; beyond it the planner's estimate is shown as "about".
COUNT_CAP = 10_000
#: Lists page through their first this many rows (200 pages of 50), whatever their size:
#: ``OFFSET n`` walks ``n`` index entries, and many more (with their rows) when a filter
#: keeps few of them. Further rows are reached by narrowing the list or reversing its order.
PAGED_ROWS = 10_000
#: Index entries a filtered list's deepest page may walk (see ``FastPaginator.rows_offered``):
#: about 50 ms of a walk that also reads each row, at ten million invocations.
PAGED_WALK = 50_000
#: From this offset on, a page first reads its primary keys through the ordering index.
DEEP_OFFSET = 1_000
#: Years the date navigation offers at its top level.
YEARS_LISTED = 3

# pynmon's palette, so both monitors colour a status the same way.
STATUS_COLORS = {
    "registered": "#6c757d",
    "concurrency_controlled": "#b58900",
    "concurrency_controlled_final": "#8d6e00",
    "rerouted": "#6f42c1",
    "pending": "#17a2b8",
    "pending_recovery": "#e67e22",
    "running": "#007bff",
    "running_recovery": "#e67e22",
    "paused": "#adb5bd",
    "killed": "#343a40",
    "success": "#28a745",
    "failed": "#dc3545",
    "retry": "#fd7e14",
    # atomic-service executions
    "completed": "#28a745",
    "abandoned": "#dc3545",
    "blocked": "#fd7e14",
}


def status_badge(status: str) -> str:
    """A coloured status label; the text is escaped like any stored value."""
    color = STATUS_COLORS.get(status, "#6c757d")
    return format_html(
        '<span class="pynenc-status" style="background:{};color:#fff;padding:1px 6px;'
        'border-radius:3px;white-space:nowrap">{}</span>',
        color,
        status.upper(),
    )


def changelist_url(model: type[Model], **params: str) -> str:
    """Link to a pynenc changelist with the given filters (``q`` is the exact-id search)."""
    url = reverse(f"admin:pynenc_django_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def invocation_link(app_id: str, invocation_id: str | None, label: str | None = None) -> str:
    """Link to an invocation by its pynenc id, found through the exact-id search."""
    if not invocation_id:
        return "-"
    from pynenc_django.models import Invocation

    url = changelist_url(Invocation, app_id=app_id, q=invocation_id)
    return format_html('<a href="{}"><code>{}</code></a>', url, label or invocation_id)


def runner_link(app_id: str, runner_id: str | None) -> str:
    if not runner_id:
        return "-"
    from pynenc_django.models import RunnerHeartbeat

    url = changelist_url(RunnerHeartbeat, app_id=app_id, q=runner_id)
    return format_html('<a href="{}"><code>{}</code></a>', url, runner_id)


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def short_id(value: str) -> str:
    """A UUID's first 8 characters, as pynenc's log lines show it; other ids whole."""
    return value[:8] if UUID_RE.fullmatch(value) else value


def runner_annotations(prefix: str, runner_id: Any) -> dict[str, Combinable]:
    """``<prefix>_name``, ``<prefix>_host`` and ``<prefix>_pid`` of the runner whose id is
    ``runner_id`` (an ``OuterRef`` or an expression of the outer row): scalar subqueries on
    the ``(app_id, runner_id)`` keys of its heartbeat and its context, so a page of rows
    gets its runners' names in its own query."""
    from pynenc_django.models import RunnerContextRecord, RunnerHeartbeat

    beats = RunnerHeartbeat.objects.filter(app_id=OuterRef("app_id"), runner_id=runner_id)
    contexts = RunnerContextRecord.objects.filter(app_id=OuterRef("app_id"), runner_id=runner_id)
    return {
        # The heartbeat's name, else the context's: a runner that stopped cleanly has none.
        f"{prefix}_name": Coalesce(
            NullIf(Subquery(beats.values("name")[:1]), Value("")),
            Subquery(contexts.values("name")[:1]),
        ),
        f"{prefix}_host": Subquery(contexts.values("hostname")[:1]),
        f"{prefix}_pid": Subquery(contexts.values("pid")[:1]),
    }


def runner_label(
    app_id: str,
    runner_id: str | None,
    name: str | None = None,
    host: str | None = None,
    pid: int | None = None,
) -> str:
    """A runner as people know it: its name (else its id, short as in the logs) linked to
    its page, then where it runs, ``(host, pid N)``; the full id in the link's title."""
    if not runner_id:
        return "-"
    from pynenc_django.models import RunnerHeartbeat

    url = changelist_url(RunnerHeartbeat, app_id=app_id, q=runner_id)
    text = format_html("{}", name) if name else format_html("<code>{}</code>", short_id(runner_id))
    where = format_html(" <small>({}, pid {})</small>", host, pid) if host else ""
    return format_html(
        '<a class="pynenc-runner" href="{}" title="runner {}">{}</a>{}', url, runner_id, text, where
    )


def annotated_runner(obj: Any, app_id: str, runner_id: str | None, prefix: str) -> str:
    """:func:`runner_label` from the values :func:`runner_annotations` put on a row (an
    object or a ``.values()`` dict)."""

    def value(key: str) -> Any:
        key = f"{prefix}_{key}"
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    return runner_label(app_id, runner_id, value("name"), value("host"), value("pid"))


#: How the admin shows a stored time: to the second (Django's default format stops at
#: minutes), in the current time zone.
TIME_FORMAT = "Y-m-d H:i:s"


def local_time(value: datetime.datetime | None) -> str:
    """A stored time to the second, its exact ISO value in the ``<time>`` element."""
    if value is None:
        return "-"
    return format_html(
        '<time datetime="{}">{}</time>',
        value.isoformat(),
        dateformat.format(timezone.localtime(value), TIME_FORMAT),
    )


def clock(value: datetime.datetime) -> str:
    """``HH:MM:SS`` in the current time zone."""
    return dateformat.format(timezone.localtime(value), "H:i:s")


def time_column(model: type[Model], name: Any) -> Any:
    """``name`` itself, unless it is a ``DateTimeField`` of ``model``: then a display
    function showing it to the second, sortable by the field, for lists and pages (the
    same function each time: Django compares list entries by identity)."""
    if not isinstance(name, str):
        return name
    return _time_column(model._meta.label, name)


@functools.cache
def _time_column(model_label: str, name: str) -> Any:
    from django.apps import apps
    from django.core.exceptions import FieldDoesNotExist

    try:
        field = apps.get_model(model_label)._meta.get_field(name)
    except FieldDoesNotExist:  # a method or attribute of the ModelAdmin: not ours to change
        return name
    if not isinstance(field, db_models.DateTimeField):
        return name

    def column(obj: Model) -> str:
        return local_time(getattr(obj, name))

    column.__name__ = name  # the column's CSS class, as for the field itself
    column.short_description = field.verbose_name  # type: ignore[attr-defined]
    column.admin_order_field = name  # type: ignore[attr-defined]
    return column


def time_columns(model: type[Model], names: Sequence[Any]) -> list[Any]:
    return [
        tuple(time_columns(model, n)) if isinstance(n, list | tuple) else time_column(model, n)
        for n in names
    ]


#: An id prefix as the logs show it: 8 hex characters or more (dashes after the first 8).
ID_PREFIX_RE = re.compile(r"[0-9a-f]{8}[0-9a-f-]*")
#: The next character of a hex digit in every collation: digits sort before letters.
_HEX_NEXT = {
    **{str(d): str(d + 1) for d in range(9)},
    "9": "a",
    **dict(zip("abcdef", "bcdefg", strict=True)),
}


def id_search(field: str, term: str) -> Q:
    """Rows whose ``field`` is ``term``, or starts with it when ``term`` is an id prefix.

    A prefix of lowercase hex ids is searched as a range on the leading hex digits,
    ``field >= 'a1b2c3d4' AND field < 'a1b2c3d5'``, which every database answers from the
    ``(app_id, field)`` index (PostgreSQL uses no btree index for ``LIKE 'x%'`` unless
    the column has a C collation or a ``*_pattern_ops`` index); ``startswith`` then keeps
    only the exact prefix. The range holds in C, ICU/glibc and MariaDB collations alike,
    since it compares only hex digits, which all of them order as ASCII does.
    """
    lowered = term.lower()
    if not ID_PREFIX_RE.fullmatch(lowered):
        return Q(**{field: term})
    digits = re.match(r"[0-9a-f]+", lowered)
    assert digits is not None  # the pattern starts with 8 hex digits
    low = digits.group()
    high = low[:-1] + _HEX_NEXT[low[-1]]
    return Q(**{f"{field}__gte": low, f"{field}__lt": high, f"{field}__startswith": lowered})


def pretty_stored_text(value: str | None) -> str:
    """Stored serialized text as it is, indented when it parses as JSON; never deserialized
    into Python objects (jsonpickle and pickle payloads would run code)."""
    if value is None:
        return ""
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return value


def duration_text(start: datetime.datetime | None, end: datetime.datetime | None) -> str:
    if start is None:
        return "-"
    seconds = ((end or timezone.now()) - start).total_seconds()
    if seconds < 1:
        text = f"{seconds * 1000:.0f} ms"
    elif seconds < 120:
        text = f"{seconds:.1f} s"
    elif seconds < 7200:
        text = f"{seconds / 60:.1f} min"
    else:
        text = f"{seconds / 3600:.1f} h"
    return text if end is not None else f"{text} (running)"


def current_app_id(request: HttpRequest) -> str | None:
    """The app the current changelist is scoped to (set by :class:`AppIdFilter`)."""
    return request_cache(request).get("app_id")


def app_ids(model: type[Model], request: HttpRequest) -> list[str]:
    """The app ids with rows in ``model``'s table: one index probe per app."""
    cache = request_cache(request)
    key = f"app_ids:{model._meta.db_table}"
    if key not in cache:
        cache[key] = distinct_values(model, "app_id", using=db_alias())
    return cache[key]


def default_app_id(ids: Sequence[str]) -> str | None:
    """The project's own app when it has rows, else the first app alphabetically."""
    if not ids:
        return None
    own = project_app_id()
    return own if own in ids else ids[0]


def rounded_estimate(n: int) -> int:
    """A planner's estimate to three significant digits: 8,012,345 shows as 8,010,000."""
    return n if n < 1000 else round(n, 3 - len(str(n)))


class FastPaginator(Paginator):
    """Counts at most :data:`COUNT_CAP` rows, estimates beyond, offers the pages of the
    first :data:`PAGED_ROWS` rows only (fewer for a rare filter, see :attr:`rows_offered`),
    and pages deep lists by key.

    ``OFFSET n`` makes the database walk ``n`` full rows; a deep page here first walks
    only the ordering index (an index-only scan on PostgreSQL) to find its primary keys,
    then fetches those rows. A page past the last one offered shows the last one
    (:attr:`page_asked` says which was asked for).
    """

    count_is_exact = True
    #: The list without the admin's filters (but its app), set by the admin: with it a
    #: filter's share of the rows is known.
    unfiltered: QuerySet | None = None
    #: The page asked for when it was past the last one offered.
    page_asked: int | None = None

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):  # not an admin list: Django's count
            return len(self.object_list)
        count, self.count_is_exact = fast_count(self.object_list, COUNT_CAP)
        return count

    @property
    def count_label(self) -> str:
        """The count as shown: exact, or the estimate to three significant digits (its
        precision, at best)."""
        return f"{self.count:,}" if self.count_is_exact else f"{rounded_estimate(self.count):,}"

    @cached_property
    def rows_offered(self) -> int:
        """:data:`PAGED_ROWS`, or fewer when a filter keeps a small share of a long list.

        Its indexes order the list by time, not by the filtered column: to reach offset
        ``n`` of a filter keeping a share ``s`` of the rows, the database walks about
        ``n / s`` index entries and their rows. So the rows offered are at most
        :data:`PAGED_WALK` times that share (``s`` from the planner's estimates: one
        ``EXPLAIN`` of the unfiltered list). Exact counts need none of this: a filter
        keeping at most :data:`COUNT_CAP` rows is read through its own index and sorted.
        """
        qs = self.object_list
        if self.count_is_exact or self.unfiltered is None or not isinstance(qs, QuerySet):
            return PAGED_ROWS
        unfiltered = self.unfiltered.order_by().values("pk")
        if str(unfiltered.query) == str(qs.order_by().values("pk").query):
            return PAGED_ROWS
        total = estimated_count(unfiltered)
        if not total or total <= self.count:
            return PAGED_ROWS
        return max(self.per_page, min(PAGED_ROWS, PAGED_WALK * self.count // total))

    @cached_property
    def all_pages(self) -> int:
        """The pages the whole list would fill (Django's ``num_pages``)."""
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        return math.ceil(max(1, self.count - self.orphans) / self.per_page)

    @cached_property
    def num_pages(self) -> int:
        return min(self.all_pages, max(1, math.ceil(self.rows_offered / self.per_page)))

    @property
    def truncated(self) -> bool:
        """Whether the list has rows past the last page offered."""
        return self.all_pages > self.num_pages

    @property
    def filter_limited(self) -> bool:
        """Whether a rare filter, not the list's length, stops the pages early."""
        return self.truncated and self.rows_offered < PAGED_ROWS

    def validate_number(self, number: Any) -> int:
        """A page past the last one offered is the last one, when the list goes on (its
        length estimated, or counted past the pages offered); past the end of a counted
        list it is Django's error."""
        try:
            return super().validate_number(number)
        except EmptyPage:
            asked = int(number)  # Django checked it is a number
            if self.truncated and (not self.count_is_exact or asked <= self.all_pages):
                self.page_asked = asked
                return self.num_pages
            raise

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        qs = self.object_list
        if bottom < DEEP_OFFSET or not isinstance(qs, QuerySet):
            return Page(qs[bottom:top], number, self)
        keys: QuerySet[Any, Any] | list[Any] = qs.values("pk")[bottom:top]
        if not vendor_of(connections[qs.db]).limits_in_subqueries:
            keys = list(qs.values_list("pk", flat=True)[bottom:top])
        return Page(list(qs.filter(pk__in=keys)), number, self)


class AppIdFilter(admin.SimpleListFilter):
    """Scopes every list to one app; there is no "All": every index starts with ``app_id``."""

    title = "app id"
    parameter_name = "app_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        ids = app_ids(model_admin.model, request)
        self.default = default_app_id(ids)
        request_cache(request)["app_id"] = self.value() or self.default
        return [(i, i) for i in ids]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        app_id = self.value() or self.default
        return queryset.filter(app_id=app_id) if app_id else queryset

    def choices(self, changelist: ChangeList) -> Iterator[_ListFilterChoices]:
        current = self.value() or self.default
        for lookup, title in self.lookup_choices:
            yield {
                "selected": current == lookup,
                "query_string": changelist.get_query_string(
                    {self.parameter_name: lookup}, remove=self._dependent_parameters()
                ),
                "display": title,
            }

    @staticmethod
    def _dependent_parameters() -> list[str]:
        # Tasks, runners and queues belong to one app: switching apps drops them.
        return ["task", "queue", "runner"]


class FixedChoicesFilter(admin.SimpleListFilter):
    """A filter whose choices are known without a query (pynenc's enums)."""

    field: str = ""
    choices_list: Sequence[tuple[str, str]] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> Sequence[tuple[str, str]]:
        return self.choices_list

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class IndexedValuesFilter(admin.SimpleListFilter):
    """Choices are the distinct values of an ``(app_id, field, ...)`` index, for the
    current app, read by skip scan and capped at :data:`MAX_CHOICES`."""

    field: str = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        app_id = current_app_id(request)
        if app_id is None:
            return []
        values = indexed_values(model_admin.model, self.field, app_id, request)
        return [(v, v) for v in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


def indexed_values(model: type[Model], field: str, app_id: str, request: HttpRequest) -> list[str]:
    cache = request_cache(request)
    key = f"values:{model._meta.db_table}:{field}:{app_id}"
    if key not in cache:
        cache[key] = distinct_values(
            model, field, using=db_alias(), app_id=app_id, limit=MAX_CHOICES
        )
    return cache[key]


class PynencChangeList(ChangeList):
    """Adds a date navigation that never runs ``SELECT DISTINCT`` over dates.

    Django's ``date_hierarchy`` lists the years, months or days that have rows, one
    DISTINCT scan of the filtered rows per page view. This one lists every year, month
    or day of the range without a query; the filter itself is Django's range on the
    indexed date column.
    """

    pynenc_date_nav: dict[str, Any] | None = None
    #: The page asked for when it was past the last page offered (then the last one shows).
    pynenc_page_asked: int | None = None

    def get_results(self, request: HttpRequest) -> None:
        """A page past the last one offered shows the last one (:class:`FastPaginator`),
        and the page links say so; a page past the end of a list is Django's error."""
        super().get_results(request)
        asked = getattr(self.paginator, "page_asked", None)
        if asked is not None:
            self.pynenc_page_asked, self.page_num = asked, self.paginator.num_pages

    def get_filters(self, request: HttpRequest) -> Any:
        """Django's, noting the date navigation's range for the paginator: the ordering
        index serves it, so it is no filter to walk past (``FastPaginator.rows_offered``)."""
        filters = super().get_filters(request)
        if self.date_hierarchy:
            remaining: dict[str, Any] = filters[2]
            bounds = (f"{self.date_hierarchy}__gte", f"{self.date_hierarchy}__lt")
            request_cache(request)["date_range"] = {
                key: remaining[key][-1] for key in bounds if remaining.get(key)
            }
        return filters

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list[Any]:
        """A column sorted the other way reverses the whole default order, tie-breakers
        included, so the ``(app_id, field DESC, id DESC)`` indexes serve it backwards
        without a sort step (Django keeps the default's ``-id`` after an ascending column).
        """
        ordering = list(super().get_ordering(request, queryset))
        if not self.params.get(ORDER_VAR) or not ordering or not _ascending(ordering[0]):
            return ordering
        chosen = list(super().get_ordering(request, queryset.order_by()))
        if chosen and chosen[-1] == "-pk":  # Django's tie-breaker, not the user's choice
            chosen.pop()
        return [*chosen, *(_reversed(field) for field in ordering[len(chosen) :])]

    def date_nav(self, request: HttpRequest) -> dict[str, Any] | None:
        field = self.date_hierarchy
        year = self.params.get(f"{field}__year")
        month = self.params.get(f"{field}__month")
        day = self.params.get(f"{field}__day")

        def link(filters: dict[str, Any]) -> str:
            return self.get_query_string(filters, [f"{field}__"])

        date_field = self.model._meta.get_field(field)
        label = date_field.verbose_name if isinstance(date_field, Field) else field
        try:
            year_n, month_n = int(year or 0), int(month or 0)
        except ValueError:
            return None
        if year and month and day:
            back = {
                "link": link({f"{field}__year": year, f"{field}__month": month}),
                "title": f"{calendar.month_name[month_n]} {year}",
            }
            return {
                "show": True,
                "back": back,
                "choices": [{"title": f"{year}-{month_n:02d}-{int(day):02d}"}],
                "field_name": label,
            }
        if year and month:
            days = calendar.monthrange(year_n, month_n)[1]
            choices = [
                {
                    "link": link(
                        {f"{field}__year": year, f"{field}__month": month, f"{field}__day": d}
                    ),
                    "title": str(d),
                }
                for d in range(1, days + 1)
            ]
            back = {"link": link({f"{field}__year": year}), "title": year}
            return {"show": True, "back": back, "choices": choices, "field_name": label}
        if year:
            choices = [
                {
                    "link": link({f"{field}__year": year, f"{field}__month": m}),
                    "title": calendar.month_abbr[m],
                }
                for m in range(1, 13)
            ]
            return {
                "show": True,
                "back": {"link": link({}), "title": "All dates"},
                "choices": choices,
                "field_name": label,
            }
        # Top level: the last few years, without a query (pynenc rows are purged long
        # before that; older ones stay reachable through the URL).
        this_year = timezone.localtime().year
        choices = [
            {"link": link({f"{field}__year": y}), "title": str(y)}
            for y in range(this_year - YEARS_LISTED + 1, this_year + 1)
        ]
        return {"show": True, "back": None, "choices": choices, "field_name": label}


def _ascending(field: Any) -> bool:
    if isinstance(field, str):
        return not field.startswith("-")
    return isinstance(field, OrderBy) and not field.descending


def _reversed(field: Any) -> Any:
    if isinstance(field, str):
        return field[1:] if field.startswith("-") else f"-{field}"
    if isinstance(field, OrderBy):
        field = field.copy()
        field.reverse_ordering()
    return field


class ReadOnlyAdminMixin:
    """Records are written by pynenc only: the admin shows them, never adds, edits or deletes
    (which also keeps Django's "delete selected" away: it would delete half an invocation)."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
        }
        return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


class PynencModelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only, app-scoped, count-capped admin for a table pynenc writes."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = FastPaginator
    list_per_page = 50
    list_max_show_all = 200
    actions: Sequence[Any] = ()
    #: Exact-match search on these indexed columns, combined with the app filter.
    exact_search_fields: Sequence[str] = ()
    change_list_template = "admin/pynenc_django/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).using(db_alias())

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PynencChangeList

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        """Tells the paginator the list before its filters (of the app and dates shown),
        so a rare filter's deep pages stay cheap (``FastPaginator.rows_offered``)."""
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        app_id = current_app_id(request)
        if isinstance(paginator, FastPaginator) and app_id is not None:
            unfiltered = self.get_queryset(request).filter(app_id=app_id)
            paginator.unfiltered = unfiltered.filter(**request_cache(request).get("date_range", {}))
        return paginator

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        cl = super().get_changelist_instance(request)
        if isinstance(cl, PynencChangeList) and cl.date_hierarchy:
            cl.pynenc_date_nav = cl.date_nav(request)
        # Evaluated once here (the template reuses it) so rows can carry per-request data.
        cl.result_list = list(cl.result_list)
        self.decorate_results(request, cl.result_list)
        return cl

    def decorate_results(self, request: HttpRequest, rows: list[Any]) -> None:
        """Attach per-request values (from configuration, not SQL) to the listed rows."""

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        # Non-empty so Django renders the search box; the lookup itself is ours.
        return list(self.exact_search_fields)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Exact match, or an id prefix (:func:`id_search`), on indexed id columns: never
        ``LIKE '%...%'`` over millions of rows."""
        term = search_term.strip()
        if not term or not self.exact_search_fields:
            return queryset, False
        condition = Q()
        for field in self.exact_search_fields:
            condition |= id_search(field, term)
        return queryset.filter(condition), False

    # Times to the second: Django's DATETIME_FORMAT stops at minutes, and pynenc's
    # events are seconds apart. Each DateTimeField becomes a display function
    # (:func:`time_column`), in lists and in the read-only pages.

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return time_columns(self.model, super().get_list_display(request))

    def get_sortable_by(self, request: HttpRequest) -> list[Any]:
        return time_columns(self.model, super().get_sortable_by(request))

    def get_list_display_links(self, request: HttpRequest, list_display: Any) -> Any:
        links = super().get_list_display_links(request, list_display)
        return None if links is None else time_columns(self.model, links)

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return [
            (title, {**options, "fields": time_columns(self.model, options["fields"])})
            for title, options in super().get_fieldsets(request, obj)
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[Any]:
        return [time_column(self.model, f.name) for f in self.model._meta.fields]

    def has_model_perm(self, request: HttpRequest, action: str) -> bool:
        """``pynenc_django.<action>_<model>``: the Django permission an admin action needs."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
