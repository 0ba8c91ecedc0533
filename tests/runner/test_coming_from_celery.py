"""README's "Coming from Celery": its tasks module and every example block, run as
written against a real ``manage.py pynenc_runner``, so the documented equivalents stay
true."""

from __future__ import annotations

import re
import sys
from collections.abc import Generator
from pathlib import Path

import pytest
from pynenc import Pynenc

from tests.runner.conftest import Runners

README = Path(__file__).resolve().parents[2] / "README.md"
TASKS_HEADER = "# celery_examples/tasks.py\n"
EXAMPLE_HEADER = re.compile(r"# example: (.+)\n")


def section_blocks() -> tuple[str, dict[str, str]]:
    """The section's tasks module, and its examples by name."""
    text = README.read_text()
    section = text.split("## Coming from Celery", 1)[1].split("\n## ", 1)[0]
    tasks, examples = "", {}
    for body in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        if body.startswith(TASKS_HEADER):
            tasks = body
        elif match := EXAMPLE_HEADER.match(body):
            examples[match.group(1)] = body
    assert tasks and examples, "the section lost its code blocks"
    return tasks, examples


TASKS, EXAMPLES = section_blocks()


@pytest.fixture
def examples_path(tmp_path: Path) -> Generator[Path, None, None]:
    """The section's tasks as the importable package ``celery_examples``."""
    package = tmp_path / "celery_examples"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(TASKS)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "celery_examples"]:
        del sys.modules[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_readme_celery_example_runs(
    name: str, app: Pynenc, runners: Runners, examples_path: Path
) -> None:
    runners.start(processes=2, env={"PYTHONPATH": str(examples_path)})
    namespace = {"attempts_file": str(examples_path / "attempts.txt")}
    exec(compile(EXAMPLES[name], f"README example: {name}", "exec"), namespace)  # noqa: S102
