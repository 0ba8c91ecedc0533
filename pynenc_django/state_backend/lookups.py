"""Look-ups by invocation id: one for an id that is not stored raises
:class:`~pynenc_django.exceptions.InvocationNotStoredError` (pynenc's
``InvocationNotFoundError``, and a ``KeyError``) that names the app and the alias,
instead of a bare ``KeyError``. The check costs a query only when the look-up found
nothing. (``get_history`` of an unknown id stays an empty list: pynenc's contract.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.types import Params, Result

from pynenc_django.exceptions import InvocationNotStoredError
from pynenc_django.state_backend.results import ResultsMixin

if TYPE_CHECKING:
    from pynenc.invocation.dist_invocation import DistributedInvocation


class LookupsMixin(ResultsMixin[Params, Result]):
    """Part of :class:`~pynenc_django.state_backend.DjangoStateBackend`; see the module
    docstring. On :class:`.results.ResultsMixin`, whose reads it completes."""

    def _not_stored(self, invocation_id: InvocationId) -> InvocationNotStoredError:
        return InvocationNotStoredError.for_app(invocation_id, self.app.app_id, self.db_alias)

    def get_invocation(self, invocation_id: InvocationId) -> DistributedInvocation:
        if self._get_invocation(invocation_id) is None:  # cached when found: one read
            raise self._not_stored(invocation_id)
        return super().get_invocation(invocation_id)

    def _get_result(self, invocation_id: InvocationId) -> str:
        return self._stored_text(invocation_id, "result", super()._get_result)

    def _get_exception(self, invocation_id: InvocationId) -> str:
        return self._stored_text(invocation_id, "exception", super()._get_exception)

    def _stored_text(
        self, invocation_id: InvocationId, what: str, read: Callable[[InvocationId], str]
    ) -> str:
        """``read(invocation_id)``; where nothing is stored, the error says whether the
        invocation itself is (then it has no ``what``: not final, or not that outcome)."""
        try:
            return read(invocation_id)
        except InvocationNotStoredError:
            raise
        except KeyError:
            if self._get_invocation(invocation_id) is None:
                raise self._not_stored(invocation_id) from None
            raise InvocationNotStoredError(
                invocation_id,
                f"the invocation is stored but has no {what} (it has not finished with one)",
            ) from None
