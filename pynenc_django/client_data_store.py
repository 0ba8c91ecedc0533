"""Client data store on the Django ORM: large arguments and results, stored once by hash."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from pynenc.client_data_store.base_client_data_store import BaseClientDataStore

from pynenc_django.conf import ConfigClientDataStoreDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient

if TYPE_CHECKING:
    from pynenc.app import Pynenc


class DjangoClientDataStore(DjangoBackendMixin, BaseClientDataStore):
    """Content-addressed: a key always names the same value, so writes are idempotent."""

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)
        ensure_django()

    @cached_property
    def conf(self) -> ConfigClientDataStoreDjango:
        return ConfigClientDataStoreDjango(
            config_values=self.app.config_values, config_filepath=self.app.config_filepath
        )

    @retry_transient
    def _store(self, key: str, value: str) -> None:
        from pynenc_django.models import ClientData

        ClientData.objects.using(self.db_alias).bulk_create(
            [
                ClientData(
                    app_id=self.app.app_id, key=key, value=value, created_at=datetime.now(UTC)
                )
            ],
            ignore_conflicts=True,
        )

    @retry_transient
    def _retrieve(self, key: str) -> str:
        from pynenc_django.models import ClientData

        value = (
            ClientData.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(key=key)
            .values_list("value", flat=True)
            .first()
        )
        if value is None:
            raise KeyError(f"Key {key} not found in client data store")
        return value

    @retry_transient
    def _purge(self) -> None:
        from pynenc_django.models import ClientData

        ClientData.objects.using(self.db_alias).for_app(self.app.app_id).delete()
