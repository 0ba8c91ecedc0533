"""``manage.py ensure_admin``: the demo's admin login, created or reset (idempotent)."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "pynenc-demo"


class Command(BaseCommand):
    help = (
        f"Create the superuser {DEMO_USERNAME!r} with password {DEMO_PASSWORD!r}, or reset "
        "that user's password and rights if it exists. For the example project only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=DEMO_USERNAME)
        parser.add_argument("--password", default=DEMO_PASSWORD)

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=options["username"], defaults={"email": "admin@example.com"}
        )
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(options["password"])
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(f"{verb} the admin login: {options['username']} / {options['password']}")
