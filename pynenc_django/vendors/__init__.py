"""The vendor layer: every database-specific statement text and flag (see ``base.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

from pynenc_django.vendors.base import Vendor
from pynenc_django.vendors.mysql import MySQL
from pynenc_django.vendors.postgresql import PostgreSQL
from pynenc_django.vendors.sqlite import SQLite

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

VENDORS: dict[str, Vendor] = {v.name: v for v in (SQLite(), PostgreSQL(), MySQL())}
SUPPORTED_VENDORS = tuple(VENDORS)


class UnsupportedDatabase(ImproperlyConfigured):
    """The alias's database is none of :data:`SUPPORTED_VENDORS` (check E005 says so too)."""


def vendor_of(connection: BaseDatabaseWrapper) -> Vendor:
    """The :class:`Vendor` of ``connection``'s database."""
    try:
        return VENDORS[connection.vendor]
    except KeyError:
        raise UnsupportedDatabase(
            f"pynenc_django does not support the {connection.vendor!r} database "
            f"(alias {connection.alias!r}); use PostgreSQL, MariaDB/MySQL or SQLite"
        ) from None


__all__ = [
    "SUPPORTED_VENDORS",
    "VENDORS",
    "MySQL",
    "PostgreSQL",
    "SQLite",
    "UnsupportedDatabase",
    "Vendor",
    "vendor_of",
]
