"""``PynencBuilder().django()``: select all five Django backends in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc.builder import PynencBuilder

COMPONENT_CLASSES = {
    "orchestrator_cls": "DjangoOrchestrator",
    "broker_cls": "DjangoBroker",
    "state_backend_cls": "DjangoStateBackend",
    "trigger_cls": "DjangoTrigger",
    "client_data_store_cls": "DjangoClientDataStore",
}

#: pynenc settings whose defaults suit the Django backends better (the user's win).
#: ``cached_status_time``: pynenc reuses a non-final status for 0.1 s, so a result
#: could never be seen sooner; a status read here is one indexed query, and the wait
#: between reads is the runner's (``ResultWaiter``), not a busy loop.
#: ``serializer_cls``: pynenc's ``JsonPickleSerializer`` stores what it cannot encode as
#: ``null`` (a lambda argument reaches the task as ``None``, the invocation ends SUCCESS);
#: ours writes the same JSON and refuses the rest at the call site
#: (:mod:`pynenc_django.serializer`).
#: ``parallel_batch_size``: ``parallelize`` routes its calls in chunks of this many, each
#: one transaction with its own commit; pynenc's 100 made a batch of 2,000 wait for 20
#: commits (1,000: 22% faster on PostgreSQL, ``make bench``). Rows beyond one statement's
#: limits are split anyway (:mod:`pynenc_django.db.statements`).
DEFAULT_SETTINGS: dict[str, Any] = {
    "cached_status_time": 0.0,
    "parallel_batch_size": 1000,
    "serializer_cls": "DjangoSerializer",
}


def django(builder: PynencBuilder, db_alias: str | None = None) -> PynencBuilder:
    """Use the Django ORM for the orchestrator, broker, state backend, trigger and
    client data store.

    :param db_alias: the ``settings.DATABASES`` alias to store pynenc's state in;
        defaults to ``"default"`` (or ``PYNENC__DJANGO_DB_ALIAS``).
    """
    builder._config.update(COMPONENT_CLASSES)
    for key, value in DEFAULT_SETTINGS.items():
        builder._config.setdefault(key, value)
    if db_alias is not None:
        builder._config["django_db_alias"] = db_alias
    builder._plugin_components.add("django")
    builder._using_memory_components = False
    return builder


def validate_django_config(config: dict[str, Any]) -> None:
    """Reject a bad alias early, and only when a Django backend is selected."""
    if not any(str(config.get(key, "")).startswith("Django") for key in COMPONENT_CLASSES):
        return
    alias = config.get("django_db_alias", "default")
    if not isinstance(alias, str) or not alias:
        raise ValueError(f"django_db_alias must be a non-empty string, got {alias!r}")


class DjangoBuilderPlugin:
    """Entry point object: pynenc calls ``register_builder_methods`` once per process."""

    @staticmethod
    def register_builder_methods(builder_class: type[PynencBuilder]) -> None:
        builder_class.register_plugin_method("django", django)
        builder_class.register_plugin_validator(validate_django_config)
