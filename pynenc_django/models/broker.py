from django.db import models

from pynenc_django.models.base import QUEUE_LENGTH, AppScopedModel, id_field


class BrokerMessage(AppScopedModel):
    """One queued invocation id. Highest priority first, then by the time the invocation
    was first queued (``created_at``: a rerouted invocation keeps its place), then FIFO."""

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=QUEUE_LENGTH)
    priority = models.FloatField(default=0.0)
    invocation_id = id_field()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_broker_message"
        indexes = [
            models.Index(
                fields=["app_id", "queue", "-priority", "created_at", "id"],
                name="pynenc_broker_order_idx",
            ),
            # A given invocation's message (the stuck-wait check's queue, the admin's search)
            # without reading the whole queue.
            models.Index(fields=["app_id", "invocation_id"], name="pynenc_broker_inv_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.invocation_id} on {self.queue} (priority {self.priority})"


class DelayedMessage(AppScopedModel):
    """An invocation queued for later (``apply_async(countdown=...)``, a retry's backoff):
    moved to :class:`BrokerMessage` once ``due_at`` has passed, by whichever worker sees
    it due first (``DjangoBroker.promote_due``). Kept apart so the claim's ordered scan of
    the queue never steps over messages that are not due yet."""

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=QUEUE_LENGTH)
    priority = models.FloatField(default=0.0)
    invocation_id = id_field()
    due_at = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_broker_delayed"
        verbose_name = "delayed message"
        indexes = [
            models.Index(fields=["app_id", "due_at"], name="pynenc_delayed_due_idx"),
            models.Index(fields=["app_id", "invocation_id"], name="pynenc_delayed_inv_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.invocation_id} on {self.queue} at {self.due_at:%Y-%m-%d %H:%M:%S}"
