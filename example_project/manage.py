#!/usr/bin/env python
"""manage.py of the example shop: ``python manage.py demo``, ``python manage.py serve``."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
