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


def django(builder: PynencBuilder, db_alias: str | None = None) -> PynencBuilder:
    """Use the Django ORM for the orchestrator, broker, state backend, trigger and
    client data store.

    :param db_alias: the ``settings.DATABASES`` alias to store pynenc's state in;
        defaults to ``"default"`` (or ``PYNENC__DJANGO_DB_ALIAS``).
    """
    builder._config.update(COMPONENT_CLASSES)
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
