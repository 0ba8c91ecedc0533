"""Admin for the broker's queue (which invocations wait in which queue, in claim order)
and its delayed messages (which wait for their due time, earliest first)."""

from __future__ import annotations

from django.contrib import admin

from pynenc_django.admin.base import (
    AppIdFilter,
    IndexedValuesFilter,
    PynencModelAdmin,
    invocation_link,
)
from pynenc_django.models import BrokerMessage, DelayedMessage


class BrokerQueueFilter(IndexedValuesFilter):
    """Queues with messages, from the ``(app_id, queue, -priority, id)`` index."""

    title = "queue"
    parameter_name = "queue"
    field = "queue"


@admin.register(BrokerMessage)
class BrokerMessageAdmin(PynencModelAdmin):
    list_display = ("invocation", "app_id", "queue", "priority", "created_at")
    list_filter = (AppIdFilter, BrokerQueueFilter)
    exact_search_fields = ("invocation_id",)
    search_help_text = "Exact invocation id."
    # The claim order (``queue_order``), which the (app_id, queue, -priority, created_at,
    # id) index serves as it is: a rerouted invocation keeps its place by ``created_at``.
    ordering = ("queue", "-priority", "created_at", "id")
    sortable_by = ()

    @admin.display(description="invocation")
    def invocation(self, obj: BrokerMessage) -> str:
        return invocation_link(obj.app_id, obj.invocation_id)


@admin.register(DelayedMessage)
class DelayedMessageAdmin(PynencModelAdmin):
    list_display = ("invocation", "app_id", "due_at", "queue", "priority", "created_at")
    list_filter = (AppIdFilter,)
    exact_search_fields = ("invocation_id",)
    search_help_text = "Exact invocation id."
    # The promotion order, which the (app_id, due_at) index serves.
    ordering = ("due_at", "id")
    sortable_by = ()

    @admin.display(description="invocation")
    def invocation(self, obj: DelayedMessage) -> str:
        return invocation_link(obj.app_id, obj.invocation_id)
