"""Index classes that migrations name: what one creates must never change once a
migration has used it (a migration is frozen history), so changes here are new classes.
"""

from collections.abc import Sequence
from typing import Any

from django.db import models


class NotNullIndex(models.Index):
    """An index of the rows whose ``not_null`` column holds a value, where the database
    has partial indexes (PostgreSQL, SQLite); a full index elsewhere (MariaDB/MySQL).

    For a column that stays NULL for most rows (a top-level call has no parent, no
    workflow; an invocation has no owner once final and no purge time until then), the
    rows that hold NULL cost no index entry when inserted or when their status changes.
    Every query through such an index looks a value up (``col = %s``, ``col > %s``,
    ``col IS NOT NULL``), which tells both databases' planners the partial index covers it.
    Not Django's ``condition=``, which does the same on MySQL but with a system-check
    warning (models.W037) in every MariaDB project.
    """

    def __init__(self, *, not_null: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not_null not in {name.lstrip("-") for name in self.fields}:
            raise ValueError(f"{self.name}: not_null={not_null!r} is not one of its fields")
        self.not_null = not_null

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        return path, args, {**kwargs, "not_null": self.not_null}

    def _get_condition_sql(self, model: type[models.Model], schema_editor: Any) -> str | None:
        if not schema_editor.connection.features.supports_partial_indexes:
            return None
        field = model._meta.get_field(self.not_null)
        if not isinstance(field, models.Field):
            raise TypeError(f"{self.name}: {self.not_null} is a relation, not a column")
        return f"{schema_editor.quote_name(field.column)} IS NOT NULL"
