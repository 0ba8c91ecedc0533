"""Workflow state: each workflow run, its key-value data (serialized through the client
data store, so large values live outside this database) and its sub-invocations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.identifiers.task_id import TaskId
from pynenc.types import Params, Result
from pynenc.workflow.workflow_identity import WorkflowIdentity

from pynenc_django.db import retry_transient
from pynenc_django.state_backend.core import StateBackendCore


def _workflow_identity(
    workflow_id: str, workflow_type_key: str, parent_workflow_id: str | None
) -> WorkflowIdentity:
    return WorkflowIdentity(
        workflow_id=InvocationId(workflow_id),
        workflow_type=TaskId.from_key(workflow_type_key),
        parent_workflow_id=InvocationId(parent_workflow_id) if parent_workflow_id else None,
    )


class WorkflowsMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    def set_workflow_data(self, workflow_identity: WorkflowIdentity, key: str, value: Any) -> None:
        # Serialize first: large values go to the client data store, outside our write.
        self._set_workflow_data(
            workflow_identity.workflow_id, key, self.app.client_data_store.serialize(value)
        )

    @retry_transient
    def _set_workflow_data(self, workflow_id: str, key: str, serialized: str) -> None:
        from pynenc_django.models import WorkflowData

        row = WorkflowData(
            app_id=self.app.app_id, workflow_id=workflow_id, data_key=key, data_value=serialized
        )
        self._upsert(WorkflowData, [row], ["app_id", "workflow_id", "data_key"], ["data_value"])

    def get_workflow_data(
        self, workflow_identity: WorkflowIdentity, key: str, default: Any = None
    ) -> Any:
        serialized = self._get_workflow_data(workflow_identity.workflow_id, key)
        if serialized is None:
            return default
        return self.app.client_data_store.deserialize(serialized)

    @retry_transient
    def _get_workflow_data(self, workflow_id: str, key: str) -> str | None:
        from pynenc_django.models import WorkflowData

        values = list(
            WorkflowData.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(workflow_id=workflow_id, data_key=key)
            .values_list("data_value", flat=True)
        )
        return values[0] if values else None

    @retry_transient
    def store_workflow_run(self, workflow_identity: WorkflowIdentity) -> None:
        from pynenc_django.models import WorkflowRun

        row = WorkflowRun(
            app_id=self.app.app_id,
            workflow_id=workflow_identity.workflow_id,
            workflow_type_key=workflow_identity.workflow_type.key,
            parent_workflow_id=workflow_identity.parent_workflow_id or None,
        )
        self._upsert(
            WorkflowRun,
            [row],
            ["app_id", "workflow_id"],
            ["workflow_type_key", "parent_workflow_id"],
        )

    def _workflow_runs(self) -> Any:
        from pynenc_django.models import WorkflowRun

        return WorkflowRun.objects.using(self.db_alias).for_app(self.app.app_id)

    @retry_transient
    def _workflow_type_keys(self) -> list[str]:
        return list(
            self._workflow_runs()
            .order_by("workflow_type_key")
            .values_list("workflow_type_key", flat=True)
            .distinct()
        )

    def get_all_workflow_types(self) -> Iterator[TaskId]:
        return (TaskId.from_key(key) for key in self._workflow_type_keys())

    def _iter_workflow_runs(self, queryset: Any) -> Iterator[WorkflowIdentity]:
        fields = ("workflow_id", "workflow_type_key", "parent_workflow_id")
        for wf_id, wf_type_key, parent_id in self._iter_pages(queryset, fields):
            yield _workflow_identity(wf_id, wf_type_key, parent_id)

    def get_all_workflow_runs(self) -> Iterator[WorkflowIdentity]:
        return self._iter_workflow_runs(self._workflow_runs())

    def get_workflow_runs(self, workflow_type: TaskId) -> Iterator[WorkflowIdentity]:
        return self._iter_workflow_runs(
            self._workflow_runs().filter(workflow_type_key=workflow_type.key)
        )

    @retry_transient
    def store_workflow_sub_invocation(
        self, parent_workflow_id: InvocationId, sub_invocation_id: InvocationId
    ) -> None:
        from pynenc_django.models import WorkflowSubInvocation

        WorkflowSubInvocation.objects.using(self.db_alias).bulk_create(
            [
                WorkflowSubInvocation(
                    app_id=self.app.app_id,
                    parent_workflow_id=parent_workflow_id,
                    sub_invocation_id=sub_invocation_id,
                )
            ],
            ignore_conflicts=True,
        )

    def get_workflow_sub_invocations(self, workflow_id: InvocationId) -> Iterator[InvocationId]:
        from pynenc_django.models import WorkflowSubInvocation

        queryset = (
            WorkflowSubInvocation.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(parent_workflow_id=workflow_id)
        )
        return self._iter_ids(queryset, "sub_invocation_id")
