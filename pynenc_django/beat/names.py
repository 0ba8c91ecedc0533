"""``PeriodicTask.task`` names to pynenc tasks.

A Celery task name is dotted (``orders.tasks.send_receipt``), and so is a pynenc task id
(``TaskId.key``: the function's module, a dot, its name), so rows written for Celery name
their pynenc task unchanged when the function kept its module and name. A name is
resolved as pynenc's workers resolve a task id: a task registered in this process
(autodiscovered tasks modules), else the ``@app.task`` object its module defines, imported
on demand if the module belongs to an installed app (a row's text, which admin users
write, never imports other code). Anything else is an :class:`UnknownTaskError` naming
the name and why.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc import Pynenc
    from pynenc.task import Task

#: Tasks the chooser does not offer (pynenc's core tasks, our Django Tasks bridge):
#: typing their names still works.
INTERNAL_PREFIXES = ("pynenc.", "pynenc_django.")


class UnknownTaskError(LookupError):
    """``PeriodicTask.task`` names no pynenc task; ``str()`` says which and why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name!r} is not a pynenc task: {reason}")


def task_choices(app: Pynenc) -> list[str]:
    """The registered task ids a person would schedule, sorted."""
    return sorted(
        task_id.key for task_id in list(app.tasks) if not task_id.key.startswith(INTERNAL_PREFIXES)
    )


def resolve_task(app: Pynenc, name: str) -> Task[Any, Any]:
    """The pynenc task that ``name`` (``module.function``) names in ``app``.

    :raises UnknownTaskError: with the reason (not dotted, module not importable, no
        ``@app.task`` of that name), and the closest registered names.
    """
    from pynenc.identifiers.task_id import TaskId
    from pynenc.task import Task

    name = (name or "").strip()
    if not name:
        raise UnknownTaskError(name, "the name is empty")
    try:
        task_id = TaskId.from_key(name)
    except ValueError:
        raise UnknownTaskError(
            name,
            "pynenc names a task by its module and function, 'module.function' "
            f"(a Celery task's custom name is not one){_suggest(app, name)}",
        ) from None
    registered = app.tasks.get(task_id)
    if registered is not None:
        return registered
    from django.apps import apps

    if apps.get_containing_app_config(task_id.module) is None:
        # A row's text never imports arbitrary code: only the installed apps' modules.
        raise UnknownTaskError(
            name,
            f"module {task_id.module!r} is not part of an installed app (INSTALLED_APPS), "
            f"and only those modules are imported for a task{_suggest(app, name)}",
        )
    try:
        module = importlib.import_module(task_id.module)
    except ImportError as exc:
        raise UnknownTaskError(
            name, f"module {task_id.module!r} cannot be imported ({exc}){_suggest(app, name)}"
        ) from None
    except Exception as exc:  # the module itself is broken: say so, never crash the loop
        raise UnknownTaskError(
            name, f"importing module {task_id.module!r} raised {type(exc).__name__}: {exc}"
        ) from None
    found = getattr(module, task_id.func_name, None)
    if not isinstance(found, Task):
        what = "nothing" if found is None else f"a {type(found).__name__}, not an @app.task"
        raise UnknownTaskError(
            name,
            f"module {task_id.module!r} defines {what} named {task_id.func_name!r}"
            f"{_suggest(app, name)}",
        )
    return app.get_task(task_id)


def _suggest(app: Pynenc, name: str) -> str:
    choices = task_choices(app)
    short = name.rsplit(".", 1)[-1]
    same_function = [c for c in choices if c.rsplit(".", 1)[-1] == short]
    close = same_function[:3] or difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
