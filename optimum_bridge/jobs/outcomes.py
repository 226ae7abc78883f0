"""What a worker's steps on a job answer (``jobs.running``): a claim, a finish, the job taken next."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from optimum_bridge.schemas import Operation

ClaimOutcome = Literal["ok", "missing", "final", "stale", "late", "leased"]


@dataclass(frozen=True)
class Completion:
    """The result of ``finish``: whether the job finished now, and whether its callback is held for
    the caller to deliver (``fields``: the finished job, to build it from; None when the finished
    state has not reached the replicas yet: the delivery path makes it once it has)."""

    finished: bool
    held: bool = False
    fields: dict[str, str] | None = None
    #: The job the thread took next (``finish(..., take=...)``), None when none.
    taken: Taken | None = None


@dataclass(frozen=True)
class Claim:
    """The result of ``claim``: go ahead (``ok``), or why not."""

    outcome: ClaimOutcome
    lease_ms: int = 0
    inflight: bool = False
    attempts: int = 0
    operation: Operation | None = None
    submitted_at: datetime | None = None
    batch_id: str | None = None
    #: With ``claim(..., send=True)``: the attempt number when counted as sent by the claim, 0 when
    #: the window has no room now (nothing may leave); None when left to ``mark_sent``.
    sent: int | None = None


@dataclass(frozen=True)
class TakeNext:
    """``finish``'s ask: the calling thread takes the next job whose slot is free now, leased to
    ``owner``; counted as sent when it is ``token_account``'s (the caller holds its token; '': none)."""

    owner: str
    lease_ms: int
    token_account: str = ""


@dataclass(frozen=True)
class Taken:
    """A job ``take_next`` took for the calling thread: as a ``Claim`` of dispatch ``dispatch`` by ``owner``."""

    job_id: str
    dispatch: int
    account: str
    owner: str
    claim: Claim
