"""Indexes over mostly-NULL columns hold only the rows with a value where the database has
partial indexes (``NotNullIndex``, migration 0013), and every way the code looks those
columns up still finds its rows through them; on MariaDB they stay full indexes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Model

from pynenc_django.models import Invocation, StateInvocation
from pynenc_django.models.indexes import NotNullIndex
from pynenc_django.ops.status import BUSY_STATUSES

APP = "test-not-null-indexes"
ROWS = 3000
WITH_VALUE = 5  # rows that hold a value in each indexed column; the rest hold NULL
PURGED_DAYS_AGO = 30  # the purge time of those that have one

#: (model, index name, its column) of every NotNullIndex.
NOT_NULL_INDEXES = [
    (model, index.name, index.not_null)
    for model in (Invocation, StateInvocation)
    for index in model._meta.indexes
    if isinstance(index, NotNullIndex)
]


def test_the_mostly_null_columns_are_the_ones_indexed_so() -> None:
    assert {(m.__name__, column) for m, _, column in NOT_NULL_INDEXES} == {
        ("Invocation", "status_runner_id"),
        ("Invocation", "auto_purge_at"),
        ("StateInvocation", "parent_invocation_id"),
        ("StateInvocation", "parent_event_id"),
        ("StateInvocation", "workflow_id"),
        ("StateInvocation", "workflow_type_key"),
    }


def index_definitions(table: str) -> dict[str, str]:
    """Name to definition (SQL; on MariaDB, the columns) of ``table``'s indexes."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table]
            )
        elif connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s",
                [table],
            )
        else:
            cursor.execute(
                "SELECT index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index) "
                "FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = %s GROUP BY index_name",
                [table],
            )
        return {name: definition or "" for name, definition in cursor.fetchall()}


@pytest.mark.parametrize(("model", "name", "column"), NOT_NULL_INDEXES)
def test_nulls_are_left_out_where_indexes_can_be_partial(
    model: type[Model], name: str, column: str
) -> None:
    definition = index_definitions(model._meta.db_table)[name]
    if connection.features.supports_partial_indexes:
        assert (
            definition.replace('"', "")
            .replace("(", "")
            .replace(")", "")
            .endswith(f"WHERE {column} IS NOT NULL")
        ), definition
    else:  # MariaDB/MySQL: the full index, as before migration 0013
        assert definition.split(",")[:2] == ["app_id", column], definition


def test_the_migration_reverses_and_reapplies() -> None:
    """Back to 0012, full indexes again (a reverse leaves nothing partial behind), then
    partial once more; MariaDB's stay as they are both ways."""
    names = {name: model._meta.db_table for model, name, _ in NOT_NULL_INDEXES}

    def partial() -> set[str]:
        return {
            name
            for name, table in names.items()
            if " WHERE " in index_definitions(table).get(name, "MISSING WHERE")
        }

    def present() -> set[str]:
        return {name for name, table in names.items() if name in index_definitions(table)}

    expected = set(names) if connection.features.supports_partial_indexes else set()
    assert partial() == expected and present() == set(names)
    call_command("migrate", "pynenc_django", "0012", verbosity=0)
    try:
        assert partial() == set() and present() == set(names)
    finally:
        call_command("migrate", "pynenc_django", verbosity=0)
    assert partial() == expected and present() == set(names)


@pytest.fixture
def mostly_null_rows() -> Iterator[None]:
    """ROWS invocations of one app, all RUNNING (the status narrows nothing), of which
    WITH_VALUE have an owner, a purge time, a parent, a parent event and a workflow; then
    the planner's statistics."""
    if not connection.features.supports_partial_indexes:
        pytest.skip("MariaDB/MySQL: the same full indexes as before")
    now = datetime.now(UTC)

    def value(i: int, v: Any) -> Any:
        return v if i < WITH_VALUE else None

    Invocation.objects.bulk_create(
        Invocation(
            app_id=APP,
            invocation_id=f"inv-{i}",
            task_id_key="tests.noop",
            call_id_key="tests.noop#args",
            status="running",
            status_runner_id=value(i, "runner-1"),
            status_timestamp=now,
            auto_purge_at=value(i, now - timedelta(days=PURGED_DAYS_AGO)),
            registered_at=now,
        )
        for i in range(ROWS)
    )
    StateInvocation.objects.bulk_create(
        StateInvocation(
            app_id=APP,
            invocation_id=f"inv-{i}",
            call_id_key="tests.noop#args",
            task_id_key="tests.noop",
            arguments_id="args",
            serialized_arguments="{}",
            parent_invocation_id=value(i, "parent-1"),
            parent_event_id=value(i, "event-1"),
            workflow_id=value(i, "workflow-1"),
            workflow_type_key=value(i, "tests.flow"),
            registered_at=now,
        )
        for i in range(ROWS)
    )
    with connection.cursor() as cursor:
        for table in (Invocation._meta.db_table, StateInvocation._meta.db_table):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
        if connection.vendor == "postgresql":
            # Any index leads with app_id, so any could scan the app's rows instead: the
            # plan must name the one the lookup is for.
            cursor.execute("SET enable_seqscan = off")
    try:
        yield
    finally:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
        Invocation.objects.filter(app_id=APP).delete()
        StateInvocation.objects.filter(app_id=APP).delete()


#: The lookups the code makes on those columns (get_child_invocations,
#: get_invocations_by_parent_event, get_invocation_ids_by_workflow with an id, a type or
#: neither, auto_purge, the recovery of RUNNING invocations, stuck_waits' busy owners), the
#: index each must go through, and how many of the rows it finds.
LOOKUPS: list[tuple[type[Model], dict[str, Any], str]] = [
    (StateInvocation, {"parent_invocation_id": "parent-1"}, "pynenc_state_inv_parent_idx"),
    (StateInvocation, {"parent_event_id": "event-1"}, "pynenc_state_inv_event_idx"),
    (StateInvocation, {"workflow_id": "workflow-1"}, "pynenc_state_inv_wf_idx"),
    (StateInvocation, {"workflow_type_key": "tests.flow"}, "pynenc_state_inv_wftype_idx"),
    (StateInvocation, {"workflow_id__isnull": False}, "pynenc_state_inv_wf_idx"),
    (
        Invocation,
        {"auto_purge_at__lte": datetime.now(UTC) - timedelta(days=PURGED_DAYS_AGO - 1)},
        "pynenc_inv_purge_idx",
    ),
    (
        Invocation,
        {"status": "running", "status_runner_id__isnull": False},
        "pynenc_inv_owner_idx",
    ),
    (
        Invocation,
        {"status_runner_id__in": ["runner-1", "runner-2"], "status__in": BUSY_STATUSES},
        "pynenc_inv_owner_idx",
    ),
]


@pytest.mark.usefixtures("mostly_null_rows")
@pytest.mark.parametrize(
    ("model", "lookup", "index"),
    LOOKUPS,
    ids=[index + ":" + ",".join(k) for _, k, index in LOOKUPS],
)
def test_every_lookup_still_goes_through_its_index(
    model: type[Model], lookup: dict[str, Any], index: str
) -> None:
    queryset = model.objects.filter(app_id=APP, **lookup).values_list("invocation_id")
    assert queryset.count() == WITH_VALUE
    plan = queryset.explain()
    assert index in plan, plan
