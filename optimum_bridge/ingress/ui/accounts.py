"""The dashboard's table of accounts created at runtime (spec §12a): those with work first, paged, by name.

At 10,000 accounts a page view reads a bounded amount, never every account:
the head of the ready set (the accounts with waiting work, soonest slot first;
``keys.ready``), one page of names from the name index (``ZRANGEBYLEX``, from
the cursor or within the filter, a name prefix), then, for the at most ``PAGE``
accounts shown, their record and lane sizes in one pipeline. The detailed
panels above it stay for the accounts file's accounts.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from optimum_bridge.accounts.record import members
from optimum_bridge.ingress.ui.security import Viewer
from optimum_bridge.keys import PRIORITIES, Keys, text

#: Accounts on one page, and how much of the ready set is looked at for those with work.
PAGE = 50
WORK_SCAN = 500


@dataclass(frozen=True)
class AccountRow:
    """One account created at runtime: who it is, its quota, what waits."""

    name: str
    client_id: str
    rate: str
    fingerprint: str
    waiting: int
    working: bool


@dataclass(frozen=True)
class AccountsTable:
    """One page of the table."""

    rows: list[AccountRow]
    total: int
    name_filter: str
    next_cursor: str | None


def _named(client: redis.Redis, keys: Keys, viewer: Viewer, *, cursor: str, prefix: str) -> list[str]:
    """Up to ``PAGE + 1`` names after ``cursor`` starting with ``prefix``, by name, that the viewer may see."""
    if viewer.caller.accounts is not None:  # a limited key: its own few names
        return sorted(n for n in viewer.caller.accounts if n > cursor and n.startswith(prefix))[: PAGE + 1]
    start = f"({cursor}" if cursor and cursor >= prefix else (f"[{prefix}" if prefix else "-")
    end = f"[{prefix}\xff" if prefix else "+"
    return members(client.zrangebylex(keys.accounts, start, end, start=0, num=PAGE + 1))


def accounts_table(
    client: redis.Redis, keys: Keys, viewer: Viewer, *, cursor: str = "", prefix: str = ""
) -> AccountsTable:
    """The page after ``cursor`` (the first: those with work come first) of names starting with ``prefix``."""
    with client.pipeline(transaction=False) as pipe:
        pipe.zrange(keys.ready, 0, WORK_SCAN - 1)
        pipe.zcard(keys.accounts)
        ready, total = pipe.execute()
    working = [] if cursor else [n for n in members(ready) if n.startswith(prefix) and viewer.caller.may_use(n)]
    named = _named(client, keys, viewer, cursor=cursor, prefix=prefix)
    more = len(named) > PAGE
    named = named[:PAGE]
    names = list(dict.fromkeys([*working[:PAGE], *named]))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(keys.account(name), ["client_id", "rate_limit", "fp"])
            for priority in PRIORITIES:
                pipe.zcard(keys.lane(priority, name))
            pipe.zcard(keys.delayed(name))
        replies = pipe.execute()
    rows = []
    step = 2 + len(PRIORITIES)
    for index, name in enumerate(names):
        record, *sizes = replies[index * step : (index + 1) * step]
        if record[0] is None:  # an account of the file (shown above), or removed since
            continue
        client_id, rate, fingerprint = (text(value) if value is not None else "" for value in record)
        rows.append(AccountRow(name, client_id, rate, fingerprint, sum(int(s) for s in sizes), name in working))
    return AccountsTable(rows, int(total), prefix, named[-1] if more and named else None)
