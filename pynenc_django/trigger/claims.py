"""The trigger loop's two cross-process decisions, each made by the database so exactly one
runner wins: which runner fires a cron tick (``store_last_cron_execution``, a compare-and-set
on the condition row) and which one executes a trigger run (``claim_trigger_run``, a unique
key, then a conditional takeover of an expired claim).
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta

from pynenc_django.db import retry_transient
from pynenc_django.trigger.core import TriggerCore, id_key
from pynenc_django.utils import from_db_time, now_utc, to_db_time

# Expired run claims are equivalent to no claim; delete them at most this often per process.
CLAIM_PRUNE_INTERVAL_SEC = 60.0
# A claim attempt retries when the expired row it wanted to take over was pruned meanwhile.
CLAIM_ATTEMPTS = 3


class ClaimsMixin(TriggerCore):
    """Part of :class:`~pynenc_django.trigger.DjangoTrigger`; see the module docstring."""

    # ------------------------------------------------------------------ #
    # Cron state
    # ------------------------------------------------------------------ #

    @retry_transient
    def get_last_cron_execution(self, condition_id: str) -> datetime | None:
        from pynenc_django.models import TriggerConditionEntry

        value = (
            self._rows(TriggerConditionEntry)
            .filter(condition_key=id_key(condition_id))
            .values_list("last_cron_execution", flat=True)
            .first()
        )
        return from_db_time(value)

    @retry_transient
    def store_last_cron_execution(
        self,
        condition_id: str,
        execution_time: datetime,
        expected_last_execution: datetime | None = None,
    ) -> bool:
        """Compare-and-set: one conditional UPDATE, so exactly one runner wins a tick.

        ``expected_last_execution=None`` means "only if it never ran". An unregistered
        condition has no row to update and returns False.
        """
        from pynenc_django.models import TriggerConditionEntry

        rows = self._rows(TriggerConditionEntry).filter(condition_key=id_key(condition_id))
        if expected_last_execution is None:
            rows = rows.filter(last_cron_execution__isnull=True)
        else:
            rows = rows.filter(last_cron_execution=to_db_time(expected_last_execution))
        return bool(rows.update(last_cron_execution=to_db_time(execution_time)))

    # ------------------------------------------------------------------ #
    # Trigger-run claims
    # ------------------------------------------------------------------ #

    def claim_trigger_run(self, trigger_run_id: str, expiration_seconds: int = 60) -> bool:
        """First claimer wins until the claim expires; then the next claimer takes it over.

        The token is drawn once per call, so a call retried after a lost connection
        recognises the row its first attempt committed.
        """
        self._maybe_prune_claims()
        return self._claim(trigger_run_id, expiration_seconds, secrets.token_hex(16))

    @retry_transient
    def _claim(self, trigger_run_id: str, expiration_seconds: int, token: str) -> bool:
        from django.db import IntegrityError
        from django.db.models import Q

        from pynenc_django.models import TriggerRunClaim, TriggerRunEntry

        claims = self._rows(TriggerRunClaim).filter(trigger_run_id=trigger_run_id)
        if self._rows(TriggerRunEntry).filter(trigger_run_id=trigger_run_id).exists():
            return False  # it ran (its record commits with it): an expired claim changes nothing
        for _ in range(CLAIM_ATTEMPTS):
            now = now_utc()
            expiration = to_db_time(now + timedelta(seconds=expiration_seconds))
            try:
                # Its own (sub)transaction: a duplicate key must not poison a caller's block,
                # and on MariaDB no lock from the failed insert is held into the update.
                with self.write_transaction():
                    TriggerRunClaim.objects.using(self.db_alias).create(
                        app_id=self.app.app_id,
                        trigger_run_id=trigger_run_id,
                        expiration=expiration,
                        claim_token=token,
                    )
                return True
            except IntegrityError:
                pass
            taken = claims.filter(Q(expiration__lt=to_db_time(now)) | Q(claim_token=token)).update(
                expiration=expiration, claim_token=token
            )
            if taken:
                return True
            if claims.exists():
                return False
            # The expired row was pruned between our insert and update: insert again.
        return False

    def _maybe_prune_claims(self) -> None:
        if time.monotonic() < self._next_claim_prune:
            return
        self._next_claim_prune = time.monotonic() + CLAIM_PRUNE_INTERVAL_SEC
        self._prune_expired_claims()

    @retry_transient
    def _prune_expired_claims(self) -> int:
        """An expired claim allows the same as no claim, so deleting it changes nothing."""
        from pynenc_django.models import TriggerRunClaim

        expired = self._rows(TriggerRunClaim).filter(expiration__lt=to_db_time(now_utc()))
        return int(expired.delete()[0])
