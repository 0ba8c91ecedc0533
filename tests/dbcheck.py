"""Say clearly whether the database named by ``DATABASE_URL`` can be reached.

Run as ``python -m tests.dbcheck`` before the suite (``make test`` does). A server that
is down is an error with the reason and how to fix it, never a silent skip.
"""

from __future__ import annotations

import os
import sys

SERVERS = {
    "postgres": "PostgreSQL (on Debian: pg_ctlcluster <version> main start)",
    "mysql": "MariaDB/MySQL (on Debian: start-stop-daemon --start --background --exec /usr/sbin/mariadbd)",
}


def check() -> str | None:
    """Return ``None`` if the test database server answers, else what is wrong."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return None
    import dj_database_url

    config = dj_database_url.parse(url)
    engine = config["ENGINE"]
    vendor = "postgres" if "postgres" in engine else "mysql" if "mysql" in engine else None
    if vendor is None:
        return None
    where = f"{config.get('HOST') or 'localhost'}:{config.get('PORT') or 'default port'}"
    try:
        if vendor == "postgres":
            import psycopg

            psycopg.connect(
                host=config["HOST"],
                port=config["PORT"] or 5432,
                user=config["USER"],
                password=config["PASSWORD"] or None,
                dbname=config["NAME"] or "postgres",
                connect_timeout=5,
            ).close()
        else:
            import MySQLdb

            MySQLdb.connect(
                host=config["HOST"],
                port=int(config["PORT"] or 3306),
                user=config["USER"],
                password=config["PASSWORD"] or "",
                connect_timeout=5,
            ).close()
    except Exception as exc:  # the driver's own message says why
        return f"{SERVERS[vendor]} is not reachable at {where} (DATABASE_URL): {exc}".strip()
    return None


def main() -> int:
    problem = check()
    if problem is None:
        return 0
    print(
        f"\nERROR: {problem}\nStart the server, or unset DATABASE_URL to test on SQLite.\n",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
