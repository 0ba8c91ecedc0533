"""pynenc's log records through Django's logging.

pynenc 0.4 gives each app's logger (``pynenc.<app_id>``) a stderr handler of its own and
turns propagation off, so handlers and levels in ``settings.LOGGING`` (files, Sentry, JSON)
never see its records and a web process prints two INFO lines per enqueue whatever
``LOGGING`` says. In a process with Django settings, :func:`create_logger` replaces
pynenc's factory (pynenc has no hook for it) and makes the app's logger an ordinary one:

* no handler of its own; records propagate to ``pynenc`` and the root logger, where
  ``LOGGING`` puts its handlers, with pynenc's context (runner, invocation and task ids)
  attached as record attributes by pynenc's :class:`~pynenc.util.log.PynencContextFilter`;
* no level of its own unless the project asks for one (``PYNENC["logging_level"]``,
  ``PYNENC__LOGGING_LEVEL`` or ``pynenc_runner --log-level``), so the ``pynenc`` logger's
  level in ``LOGGING`` applies; with no ``LOGGING`` for it, a client process shows
  warnings and errors only (Python's default).

A runner process is where pynenc's INFO lines belong: :func:`configure_runner_logging`
gives ``pynenc`` and ``pynenc_django`` level INFO when ``LOGGING`` sets none, and a stderr
handler with pynenc's formatter when no handler would receive their records; colours only
on a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc import Pynenc

#: The loggers a runner process shows: pynenc's (one child per app id) and ours.
RUNNER_LOGGERS = ("pynenc", "pynenc_django")
#: pynenc's format for plain text (its formatters add the runner/invocation context).
TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s %(message)s"

_pynenc_create_logger: Callable[..., logging.Logger] | None = None


def install() -> None:
    """Route every pynenc app's logger through :func:`create_logger` (idempotent)."""
    global _pynenc_create_logger
    import pynenc.app

    if pynenc.app.create_logger is create_logger:
        return
    _pynenc_create_logger = pynenc.app.create_logger
    pynenc.app.create_logger = create_logger


def create_logger(app: Pynenc, *args: Any, **kwargs: Any) -> logging.Logger:
    """The app's logger: pynenc's own outside Django, an ordinary propagating one inside."""
    from django.conf import settings

    if not settings.configured or args or kwargs:
        assert _pynenc_create_logger is not None  # install() ran: it is how we got here
        return _pynenc_create_logger(app, *args, **kwargs)
    from pynenc.util.log import PlainTextFormatter, PynencContextFilter, _PynencFormatterBase

    logger = logging.getLogger(f"pynenc.{app.app_id}")
    for old in [f for f in logger.filters if isinstance(f, PynencContextFilter)]:
        logger.removeFilter(old)  # an app rebuilt with new settings: read the new conf
    logger.addFilter(PynencContextFilter(app.app_id, app.conf))
    # Undo pynenc's own set-up, should it have run before Django was configured.
    for handler in list(logger.handlers):
        if isinstance(handler.formatter, _PynencFormatterBase):
            logger.removeHandler(handler)
    # A handler that writes nothing, as libraries should have; it carries pynenc's
    # formatter for code that reads ``app.logger.handlers[0]`` (pynenc's own tests do).
    quiet = logging.NullHandler()
    quiet.setFormatter(PlainTextFormatter(fmt=TEXT_FORMAT))
    logger.addHandler(quiet)
    logger.propagate = True
    logger.setLevel(_level(explicit_level(app)))
    return logger


def explicit_level(app: Pynenc) -> str | None:
    """The log level the project set for pynenc, if it set one (pynenc's default of
    ``"info"`` is not a choice: it would override ``LOGGING``)."""
    if "logging_level" in (app.config_values or {}) or os.environ.get("PYNENC__LOGGING_LEVEL"):
        return str(app.conf.logging_level)
    return None


def _level(name: str | None) -> int:
    if name is None:
        return logging.NOTSET
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ValueError(
            f"PYNENC['logging_level'] is {name!r}, which is not a log level "
            "(debug, info, warning, error or critical)"
        )
    return level


def configure_runner_logging(app: Pynenc) -> None:
    """Show pynenc's INFO records in a runner process unless ``LOGGING`` decides."""
    from pynenc.util.log import ColoredFormatter, JsonFormatter, PlainTextFormatter

    for name in RUNNER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    unheard = [name for name in RUNNER_LOGGERS if not logging.getLogger(name).hasHandlers()]
    if not unheard:
        return  # LOGGING (or the root logger) already receives them
    stream = sys.stdout if app.conf.log_stream == "stdout" else sys.stderr
    formatter: logging.Formatter
    if str(getattr(app.conf.log_format, "value", app.conf.log_format)) == "json":
        formatter = JsonFormatter()
    elif _use_colors(app, stream):
        formatter = ColoredFormatter(fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
    else:
        formatter = PlainTextFormatter(fmt=TEXT_FORMAT)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for name in unheard:
        logging.getLogger(name).addHandler(handler)


def _use_colors(app: Pynenc, stream: Any) -> bool:
    """Colours on a terminal only; ``PYNENC["log_use_colors"] = False`` turns them off
    there too (pynenc's default of True would colour log files)."""
    if "log_use_colors" in (app.config_values or {}) and not app.conf.log_use_colors:
        return False
    return bool(getattr(stream, "isatty", lambda: False)())
