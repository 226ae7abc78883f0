"""Which reads are the same call (spec §13): identical GETs share one, or reuse a fresh answer.

The vendor states that a GET has no side effects, so two GETs of one account
with the same path and query get the same answer from one call. The digest
says what "the same" is:

- the path exactly as given: ASP.NET ignores case in a route's fixed words,
  but values in a path (a name, an id) reach the API as sent;
- the query as it will be sent (values encoded as httpx encodes them:
  ``True`` is ``true``), its parameters in any order, a list's values in
  theirs (``a=1&a=2`` is not assumed to equal ``a=2&a=1``);
- parameter names as given: that the API reads ``startdate`` as
  ``startDate`` is not assumed.

A job with a ``not_before`` neither shares a call nor gives one (its answer must
not come from before that time); writes never do. The scripts (``lua/submit.lua``,
``lua/complete.lua``) keep, per digest, the job whose call is waiting or running
(``Keys.read``) and the last one that succeeded (``Keys.fresh``).
"""

from __future__ import annotations

import hashlib
import json

from optimum_bridge.schemas import Operation, QueryScalar, QueryValue


def _encoded(value: QueryScalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(query: dict[str, QueryValue]) -> list[tuple[str, list[str]]]:
    return sorted(
        (name, [_encoded(v) for v in value] if isinstance(value, list) else [_encoded(value)])
        for name, value in query.items()
    )


def read_digest(operation: Operation) -> str | None:
    """The digest naming ``operation``'s answer among identical reads; None if it must make its own call."""
    if operation.method != "GET" or operation.not_before is not None:
        return None
    canonical = json.dumps(
        [operation.path, _pairs(operation.query), operation.body], separators=(",", ":"), sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
