from django.db import models

from pynenc_django.models.base import AppScopedModel


class ClientData(AppScopedModel):
    """A large serialized argument or result, stored once under its content hash.

    Values are split into chunks so one row never approaches a server's packet limit
    (MariaDB's ``max_allowed_packet`` is 16 MiB by default); pynenc values can be larger.
    """

    key = models.CharField(max_length=128)
    chunk = models.PositiveIntegerField(default=0)
    value = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        db_table = "pynenc_client_data"
        verbose_name_plural = "client data"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id", "key", "chunk"], name="pynenc_client_data_key_uniq"
            )
        ]
        indexes = [models.Index(fields=["app_id", "created_at"], name="pynenc_client_data_age_idx")]

    def __str__(self) -> str:
        return self.key if not self.chunk else f"{self.key} (part {self.chunk + 1})"
