"""A user's mypy sees ``from pynenc_django import app`` as pynenc's ``Pynenc``, and the
tasks it declares keep their types: ``add(1, 2).result`` is an ``int``.

The project below is checked as a user's would be, with pynenc_django installed as its
wheel installs it (a package directory with ``py.typed`` on the path, not this
repository's sources), strict mode, and the one setting pynenc needs: it ships no
``py.typed``, so mypy reads its annotations only with ``follow_untyped_imports``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pynenc_django

PACKAGE = Path(pynenc_django.__file__).resolve().parent

SETTINGS = """\
SECRET_KEY = "not-a-secret"
INSTALLED_APPS = ["django.contrib.contenttypes", "pynenc_django", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True
PYNENC = {"app_id": "shop"}
"""

TASKS = """\
from pynenc import Pynenc

from pynenc_django import app


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(queue="default", max_retries=2)
def greet(name: str) -> str:
    return f"hello {name}"


@app.task
async def double(x: int) -> int:
    return 2 * x


def total() -> int:
    return add(1, 2).result + double(2).result


def greeting() -> str:
    return greet("shop").result


async def doubled() -> int:
    return await double(3).async_result()


def the_app() -> Pynenc:
    return app
"""

# One deliberate error per line: the errors mypy must report, by line.
BAD = """\
from pynenc_django import app
from shop.tasks import add

wrong_result: str = add(1, 2).result
wrong_argument = add("1", 2)
wrong_option = app.task(add.func, queue=3)
"""
BAD_ERRORS = {
    4: "[assignment]",
    5: "[arg-type]",
    6: "[call-overload]",
}

PYNENC_TYPED = """
[[tool.mypy.overrides]]
module = ["pynenc", "pynenc.*"]
follow_untyped_imports = true
"""

CONFIGS = {
    "plain": f"[tool.mypy]\nstrict = true\n{PYNENC_TYPED}",
    "django-stubs": (
        '[tool.mypy]\nstrict = true\nplugins = ["mypy_django_plugin.main"]\n'
        f'{PYNENC_TYPED}\n[tool.django-stubs]\ndjango_settings_module = "shop.settings"\n'
    ),
}


def installed_copy(site: Path) -> None:
    """pynenc_django as its wheel installs it: the package's files, ``py.typed`` included."""
    shutil.copytree(PACKAGE, site / "pynenc_django", ignore=shutil.ignore_patterns("__pycache__"))
    assert (site / "pynenc_django" / "py.typed").exists()


def run_mypy(project: Path, site: Path, *files: str) -> tuple[int, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MYPY"))},
        "PYTHONPATH": str(site),
    }
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(project / ".mypy_cache"), *files],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("config", list(CONFIGS))
def test_users_mypy_types_app_and_tasks(tmp_path: Path, config: str) -> None:
    site, project = tmp_path / "site-packages", tmp_path / "project"
    installed_copy(site)
    (project / "shop").mkdir(parents=True)
    (project / "shop" / "__init__.py").write_text("")
    (project / "shop" / "settings.py").write_text(SETTINGS)
    (project / "shop" / "tasks.py").write_text(TASKS)
    (project / "shop" / "bad.py").write_text(BAD)
    (project / "pyproject.toml").write_text(CONFIGS[config])

    code, output = run_mypy(project, site, "shop/settings.py", "shop/tasks.py")
    assert code == 0, output
    assert "Success: no issues found" in output, output

    code, output = run_mypy(project, site, "shop/bad.py")
    assert code == 1, output
    found = {
        int(line): kind
        for line, kind in re.findall(r"^shop/bad\.py:(\d+): error: .*(\[[a-z-]+\])$", output, re.M)
    }
    assert found == BAD_ERRORS, output
    assert 'Incompatible types in assignment (expression has type "int"' in output, output
