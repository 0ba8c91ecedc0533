from django.db import models

from pynenc_django.models.base import AppScopedModel


class ClientData(AppScopedModel):
    """A large serialized argument or result, stored once under its content hash."""

    key = models.CharField(max_length=128)
    value = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_client_data"
        verbose_name_plural = "client data"
        constraints = [
            models.UniqueConstraint(fields=["app_id", "key"], name="pynenc_client_data_key_uniq")
        ]
        indexes = [models.Index(fields=["app_id", "created_at"], name="pynenc_client_data_age_idx")]

    def __str__(self) -> str:
        return self.key
