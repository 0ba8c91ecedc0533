#!/usr/bin/env python
"""tests/project's manage.py without the ``if __name__ == "__main__":`` guard (a mistake
seen in the wild): the spawn start method runs this body again in every worker process,
so every worker re-runs the command instead of starting."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
from django.core.management import execute_from_command_line  # noqa: E402

execute_from_command_line(sys.argv)
