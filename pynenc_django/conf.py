"""pynenc configuration classes for the Django backends.

Every setting goes through pynenc's own config system (cistell), so it can be given to
``PynencBuilder().django(db_alias=...)``, ``Pynenc(config_values=...)``, a pynenc config
file, or environment variables such as ``PYNENC__DJANGO_DB_ALIAS``.
"""

from cistell import ConfigField
from pynenc.conf.config_base import ConfigPynencBase
from pynenc.conf.config_broker import ConfigBroker
from pynenc.conf.config_client_data_store import ConfigClientDataStore
from pynenc.conf.config_orchestrator import ConfigOrchestrator
from pynenc.conf.config_state_backend import ConfigStateBackend
from pynenc.conf.config_trigger import ConfigTrigger


class ConfigDjango(ConfigPynencBase):
    """Settings shared by every Django backend.

    :cvar ConfigField[str] django_db_alias:
        The ``settings.DATABASES`` alias pynenc stores its state in.
    :cvar ConfigField[int] django_transient_retries:
        How many times an operation is retried after a transient database error
        (SQLite "database is locked", lock-wait timeouts, deadlocks, serialization
        failures, a dropped connection outside a transaction) before it is raised.
    """

    django_db_alias = ConfigField("default")
    django_transient_retries = ConfigField(8)


class ConfigOrchestratorDjango(ConfigOrchestrator, ConfigDjango):
    """Orchestrator settings for :class:`~pynenc_django.orchestrator.DjangoOrchestrator`."""


class ConfigBrokerDjango(ConfigBroker, ConfigDjango):
    """Broker settings for :class:`~pynenc_django.broker.DjangoBroker`."""


class ConfigStateBackendDjango(ConfigStateBackend, ConfigDjango):
    """State backend settings for :class:`~pynenc_django.state_backend.DjangoStateBackend`."""


class ConfigTriggerDjango(ConfigTrigger, ConfigDjango):
    """Trigger settings for :class:`~pynenc_django.trigger.DjangoTrigger`."""


class ConfigClientDataStoreDjango(ConfigClientDataStore, ConfigDjango):
    """Client data store settings for :class:`~pynenc_django.client_data_store.DjangoClientDataStore`."""
