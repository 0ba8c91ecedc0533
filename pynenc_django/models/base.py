"""Field conventions shared by every pynenc model.

Every table holds the rows of many pynenc apps, so ``app_id`` leads every key and index.
Identifier lengths are chosen so composite keys stay under InnoDB's 3,072-byte index
limit with utf8mb4 on MariaDB/MySQL.
"""

from typing import Any

from django.db import models

APP_ID_LENGTH = 255
ID_LENGTH = 255  # invocation ids, runner ids, run ids, condition ids, ...
KEY_LENGTH = 320  # task id keys, call id keys (module.function plus an argument hash)
STATUS_LENGTH = 32
QUEUE_LENGTH = 255
RUNNER_NAME_LENGTH = 100  # manage.py pynenc_runner --name


def app_id_field() -> models.CharField:
    return models.CharField(max_length=APP_ID_LENGTH)


def id_field(**kwargs: Any) -> models.CharField:
    return models.CharField(max_length=ID_LENGTH, **kwargs)


class AppScopedQuerySet(models.QuerySet):
    """QuerySet whose first verb is always ``for_app``: no query may cross app ids."""

    def for_app(self, app_id: str) -> "AppScopedQuerySet":
        return self.filter(app_id=app_id)


class AppScopedModel(models.Model):
    app_id = app_id_field()

    objects = AppScopedQuerySet.as_manager()

    class Meta:
        abstract = True
