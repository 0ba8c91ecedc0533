"""What a ``pip install`` user gets: the built sdist and wheel, installed non-editable into a
fresh virtualenv, running a fresh Django project made from the README's Quick start.

``make test`` installs the checkout editable, so files the wheel leaves out (the admin's
templates were) are never missed there: every admin page returned HTTP 500 for pip users.
Here the project is built with ``python -m build`` (an sdist, then the wheel from it), set
up from the Quick start's own code blocks, migrated on the database under test (a private
database on the same server), runs a task through a real ``pynenc_runner``, and loads
every admin page.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
import zipfile
from collections.abc import Generator
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ARTIFACTS = REPO / ".test-artifacts"

pytestmark = pytest.mark.timeout(900)


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env={**_clean_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{output[-6000:]}"
    return output


def _clean_environment() -> dict[str, str]:
    """This suite's environment without what makes it this suite's (its settings module,
    its import path, pynenc overrides): the smoke project must stand on its own."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV"}
        and not key.startswith("PYNENC")
    }


def quick_start_blocks() -> dict[str, str]:
    """The Quick start's code blocks, by what they are: settings, tasks, commands, shell."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        if body.startswith("# settings.py"):
            blocks["settings"] = body
        elif body.startswith("# orders/tasks.py"):
            blocks["tasks"] = body
        elif body.startswith(">>>"):
            blocks["shell"] = body
        elif lang == "console":
            blocks.setdefault("console", "")
            blocks["console"] += body
    assert set(blocks) == {"settings", "tasks", "shell", "console"}, blocks
    return blocks


def _source_tree(dest: Path) -> None:
    """The checkout as ``git`` sees it (tracked and new files), without build leftovers."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / name.decode())


class Database:
    """A private database for the smoke project on the server under test (or SQLite)."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = os.environ.get("DATABASE_URL", "")
        self.name = f"pynenc_wheel_{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path

    @property
    def extra(self) -> str:
        if self.url.startswith("postgres"):
            return "[postgres]"
        if self.url.startswith("mysql"):
            return "[mysql]"
        return ""

    def settings(self) -> str:
        if not self.url:
            return f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(self.tmp_path / 'db.sqlite3')!r}}}}}\n"
        parts = urlparse(self.url)
        engine = "postgresql" if self.url.startswith("postgres") else "mysql"
        options = ", 'OPTIONS': {'charset': 'utf8mb4'}" if engine == "mysql" else ""
        return (
            f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.{engine}', "
            f"'NAME': {self.name!r}, 'USER': {parts.username or ''!r}, "
            f"'PASSWORD': {parts.password or ''!r}, 'HOST': {parts.hostname or ''!r}, "
            f"'PORT': {str(parts.port or '')!r}{options}}}}}\n"
        )

    def _execute(self, statement: str) -> None:
        parts = urlparse(self.url)
        if self.url.startswith("postgres"):
            import psycopg

            with psycopg.connect(
                host=parts.hostname, port=parts.port or 5432, user=parts.username,
                password=parts.password or None, dbname=parts.path.lstrip("/") or "postgres",
                autocommit=True,
            ) as conn:  # fmt: skip
                conn.execute(statement)
        else:
            import MySQLdb

            conn = MySQLdb.connect(
                host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                password=parts.password or "",
            )  # fmt: skip
            try:
                conn.cursor().execute(statement)
            finally:
                conn.close()

    def create(self) -> None:
        if self.url:
            extra = " CHARACTER SET utf8mb4" if self.url.startswith("mysql") else ""
            self._execute(f"CREATE DATABASE {self.name}{extra}")

    def drop(self) -> None:
        if self.url:
            force = " WITH (FORCE)" if self.url.startswith("postgres") else ""
            self._execute(f"DROP DATABASE IF EXISTS {self.name}{force}")


@pytest.fixture
def database(tmp_path: Path) -> Generator[Database, None, None]:
    db = Database(tmp_path)
    db.create()
    yield db
    db.drop()


def _built(tmp_path: Path) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the checkout: the sdist, and the wheel built from it.

    Built once per content of the checkout and kept in ``.test-artifacts/``: the suite's
    run on each database (CI runs three) tests the same wheel, installed afresh each time.
    """
    src = tmp_path / "src"
    _source_tree(src)
    digest = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    kept = ARTIFACTS / f"dist-{digest.hexdigest()[:16]}"
    if not kept.is_dir():
        dist = tmp_path / "dist"
        builder = tmp_path / "build-venv"
        _run(sys.executable, "-m", "venv", builder, cwd=tmp_path)
        _run(builder / "bin" / "pip", "install", "--quiet", "build", cwd=tmp_path)
        _run(builder / "bin" / "python", "-m", "build", "--outdir", dist, src, cwd=tmp_path)
        for old in ARTIFACTS.glob("dist-*"):  # an earlier checkout's
            shutil.rmtree(old, ignore_errors=True)
        staging = ARTIFACTS / f".dist-{uuid.uuid4().hex}"
        shutil.copytree(dist, staging)
        staging.rename(kept)  # whole, or not at all
    (sdist,) = kept.glob("*.tar.gz")
    (wheel,) = kept.glob("*.whl")
    return sdist, wheel


def test_the_built_wheel_runs_the_quick_start_and_every_admin_page(
    tmp_path: Path, database: Database
) -> None:
    sdist, wheel = _built(tmp_path)

    # Every file the package has in the checkout ships, in the sdist and in the wheel.
    package_files = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "pynenc_django").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert not package_files - in_wheel, f"missing from the wheel: {package_files - in_wheel}"
    assert not package_files - in_sdist, f"missing from the sdist: {package_files - in_sdist}"
    assert {"LICENSE", "CHANGELOG.md", "README.md"} <= in_sdist, in_sdist

    # A fresh virtualenv with the wheel, non-editable, as `pip install pynenc-django` does.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", f"{wheel}{database.extra}", cwd=tmp_path)
    location = _run(
        python, "-c", "import pynenc_django; print(pynenc_django.__file__)", cwd=tmp_path
    )
    assert str(venv) in location and str(REPO) not in location, location

    # A fresh Django project, set up as the Quick start says.
    blocks = quick_start_blocks()
    project = tmp_path / "project"
    project.mkdir()
    _run(venv / "bin" / "django-admin", "startproject", "site_config", ".", cwd=project)
    _run(python, "manage.py", "startapp", "orders", cwd=project)
    settings_path = project / "site_config" / "settings.py"
    settings = settings_path.read_text()
    quick = blocks["settings"]
    apps_line = re.search(r"INSTALLED_APPS = \[(.*)\]", quick)
    assert apps_line, quick
    ours = [name.strip().strip("'\"") for name in apps_line.group(1).split(",")]
    assert "..." in ours and "pynenc_django" in ours, ours
    defaults = re.search(r"INSTALLED_APPS = \[(.*?)\]", settings, flags=re.S)
    assert defaults
    django_apps = [n.strip().strip("'\"") for n in defaults.group(1).split(",") if n.strip()]
    where = ours.index("...")
    installed = [*ours[:where], *django_apps, "orders", *ours[where + 1 :]]
    settings = settings.replace(defaults.group(0), f"INSTALLED_APPS = {installed!r}")
    settings += "\n" + re.sub(r"^INSTALLED_APPS = .*$", "", quick, flags=re.M)
    settings += "\n" + database.settings()
    settings_path.write_text(settings)
    (project / "orders" / "tasks.py").write_text(blocks["tasks"])

    commands = [line.split("#")[0].split() for line in blocks["console"].splitlines()]
    commands = [c for c in commands if c and c[0] == "python"]
    assert ["python", "manage.py", "migrate"] in commands, commands
    assert ["python", "manage.py", "pynenc_runner"] in commands, commands
    _run(python, "manage.py", "migrate", "--verbosity", "0", cwd=project)
    _run(python, "manage.py", "check", "--fail-level", "WARNING", cwd=project)

    log_path = tmp_path / "runner.log"
    with open(log_path, "wb") as log:
        runner = subprocess.Popen(
            [str(python), "manage.py", "pynenc_runner", "--processes", "1"],
            cwd=project,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_environment(),
            start_new_session=True,
        )
    try:
        shell = "\n".join(
            line[4:] for line in blocks["shell"].splitlines() if line.startswith(">>> ")
        )
        expected = [
            line.strip()
            for line in blocks["shell"].splitlines()
            if line and not line.startswith(">>>")
        ]
        code = shell.replace(".result", ".result", 1)
        out = _run(python, "manage.py", "shell", "--no-imports", "-c", _printing(code), cwd=project)
        assert out.strip().splitlines()[-1] == expected[-1].split("#")[0].strip(), (
            f"{out}\n--- runner log\n{log_path.read_text()}"
        )
        pages = _run(python, "manage.py", "shell", "--no-imports", "-c", ADMIN_PAGES, cwd=project)
        assert "ADMIN PAGES OK" in pages, pages
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)
        time.sleep(0.5)
    assert runner.returncode == 0, log_path.read_text()


def _printing(code: str) -> str:
    """The shell session's statements, its last expression printed as the REPL would."""
    lines = code.splitlines()
    return "\n".join([*lines[:-1], f"print(repr({lines[-1].split('#')[0].strip()}))"])


#: Logs in as a new superuser and loads the admin index, the overview, every pynenc
#: changelist and the change page of a row of each; any status but 200 is a failure.
ADMIN_PAGES = textwrap.dedent(
    """
    from django.conf import settings
    settings.ALLOWED_HOSTS = ["testserver"]
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    User.objects.create_superuser("smoke", "smoke@example.com", "smoke-password")
    client = Client()
    assert client.login(username="smoke", password="smoke-password")
    urls = [reverse("admin:index"), reverse("admin:app_list", args=["pynenc_django"])]
    urls.append(reverse("admin:pynenc_django_overview"))
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "pynenc_django":
            continue
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:%s_%s_changelist" % info))
        row = model.objects.first()
        if row is not None:
            urls.append(reverse("admin:%s_%s_change" % info, args=[row.pk]))
    failed = []
    for url in urls:
        response = client.get(url)
        if response.status_code != 200:
            failed.append((url, response.status_code, response.content[:300]))
    assert not failed, failed
    assert len(urls) > 8, urls
    print("ADMIN PAGES OK", len(urls))
    """
)
