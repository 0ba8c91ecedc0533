"""App info: the JSON each app stores about itself, read back for its own app_id, or for
every app in the database by a process that has no app (the monitor's discovery).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pynenc.app_info import AppInfo
from pynenc.types import Params, Result

from pynenc_django.conf import ConfigStateBackendDjango
from pynenc_django.db import DjangoBackendMixin, ensure_django, retry_transient
from pynenc_django.state_backend.core import StateBackendCore


class AppInfoMixin(StateBackendCore[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring."""

    @retry_transient
    def store_app_info(self, app_info: AppInfo) -> None:
        from pynenc_django.models import AppInfoRecord

        row = AppInfoRecord(
            app_id=app_info.app_id, app_info_json=app_info.to_json(), updated_at=datetime.now(UTC)
        )
        self._upsert(AppInfoRecord, [row], ["app_id"], ["app_info_json", "updated_at"])

    @retry_transient
    def get_app_info(self) -> AppInfo:
        from pynenc_django.models import AppInfoRecord

        values = list(
            AppInfoRecord.objects.using(self.db_alias)
            .for_app(self.app.app_id)
            .values_list("app_info_json", flat=True)
        )
        if not values:
            raise KeyError(f"App info for {self.app.app_id} not found")
        return AppInfo.from_json(values[0])

    @staticmethod
    def discover_app_infos() -> dict[str, AppInfo]:
        """Every app that stored its info in the configured database, whatever its app_id.

        There is no app here, so the alias comes from the default config sources
        (``PYNENC__DJANGO_DB_ALIAS``, config files), else ``"default"``.
        """
        ensure_django()
        return _AppInfoDiscovery(ConfigStateBackendDjango()).read()


class _AppInfoDiscovery(DjangoBackendMixin):
    """A backend-shaped holder so the app-less discovery query gets the same retries."""

    def __init__(self, conf: ConfigStateBackendDjango) -> None:
        self.conf = conf

    @retry_transient
    def read(self) -> dict[str, AppInfo]:
        from pynenc_django.models import AppInfoRecord

        rows = AppInfoRecord.objects.using(self.db_alias).order_by("app_id")
        return {
            app_id: AppInfo.from_json(app_info_json)
            for app_id, app_info_json in rows.values_list("app_id", "app_info_json")
        }
