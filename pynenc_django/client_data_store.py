"""Client data store on the Django ORM: large arguments and results, stored once by hash."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from pynenc.client_data_store.base_client_data_store import BaseClientDataStore

from pynenc_django.conf import ConfigClientDataStoreDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient
from pynenc_django.utils import now_utc

if TYPE_CHECKING:
    from pynenc.app import Pynenc


# Characters per stored row: at most 4 MiB of utf8mb4, far below any server packet limit.
CHUNK_CHARS = 1_000_000


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
        """Write every chunk in one transaction, so readers see the whole value or none.

        Values are stored once per content hash; storing one again only re-stamps
        ``created_at`` (so it means "last stored"), which lets retention tell data that
        unfinished invocations may still reference from data nothing can need.
        """
        from pynenc_django.models import ClientData

        now = now_utc()
        with self.write_transaction():
            for index, start in enumerate(range(0, max(len(value), 1), CHUNK_CHARS)):
                self._upsert(
                    ClientData,
                    [
                        ClientData(
                            app_id=self.app.app_id,
                            key=key,
                            chunk=index,
                            value=value[start : start + CHUNK_CHARS],
                            created_at=now,
                        )
                    ],
                    unique_fields=["app_id", "key", "chunk"],
                    update_fields=["created_at"],
                )

    @retry_transient
    def _retrieve(self, key: str) -> str:
        from pynenc_django.models import ClientData

        chunks = list(
            ClientData.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .filter(key=key)
            .order_by("chunk")
            .values_list("value", flat=True)
        )
        if not chunks:
            raise KeyError(f"Key {key} not found in client data store")
        return "".join(chunks)

    @retry_transient
    def _purge(self) -> None:
        from pynenc_django.models import ClientData

        ClientData.objects.using(self.db_alias).for_app(self.app.app_id).delete()
