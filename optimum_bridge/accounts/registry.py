"""A process's view of every account: the accounts file's, and those created at runtime (spec §12a).

Workers serve an account within 2 s of its creation and stop within 2 s of its
removal, without a restart: ``refresh`` costs one ``GET`` of
``keys.accounts_version`` at most once a second (the upkeep loop calls it; so do
the task threads, which in a prefork pool live in other processes), whatever
the number of accounts. Only when the version moved does it read which
accounts changed since (``keys.accounts_changes``) and those accounts' records.
An account a task asks for and this view lacks makes it look at once (at most
ten times a second), so a job of an account created a moment ago is not turned
away.

``generation`` counts the changes this view has seen: ``process.upkeep`` compares
it to bring the dispatcher's quotas along (``quota.dispatcher``), without a timer per account.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import redis

from optimum_bridge.accounts.cipher import SecretsKeyError
from optimum_bridge.accounts.record import Stored, members
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.config.accounts import DEFAULT, Account, Accounts

log = logging.getLogger(__name__)

#: How often the version is read, at most (the 2 s of spec §12a, with room for a dispatch).
EVERY_S = 1.0
#: How often an unknown account makes the view look at once, at most.
UNKNOWN_EVERY_S = 0.1


class AccountRegistry:
    """Every account of the bridge, by name; refreshed from Redis at most once a second."""

    def __init__(
        self,
        store: AccountStore,
        *,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.file: Accounts = store.file
        self._every_s = every_s
        self._clock = clock
        self._runtime: dict[str, Account] = {}
        self._version: int | None = None
        self._checked = float("-inf")
        self._looked_for_unknown = float("-inf")
        self._lock = threading.Lock()
        self._unreadable: set[tuple[str, str]] = set()
        self.generation = 0

    @property
    def _redis(self) -> redis.Redis:
        return self.store._redis

    def load(self, *, strict: bool = False) -> int:
        """Read every runtime account now; how many. ``strict``: a secret no key decrypts raises
        ``SecretsKeyError`` (a worker's start), else that account is logged and left out."""
        with self._lock:
            return self._load(strict=strict)

    def _load(self, *, strict: bool) -> int:
        version = self._read_version()
        accounts: dict[str, Account] = {}
        for name, stored in self.store.stored_many(self.store.names()).items():
            account = self._account(stored, strict=strict)
            if account is not None:
                accounts[name] = account
        self._runtime = accounts
        self._version = version
        self._checked = self._clock()
        self.generation += 1
        return len(accounts)

    def refresh(self, *, force: bool = False) -> bool:
        """Look for changes (at most once every ``every_s`` unless ``force``); whether any were applied."""
        if self._version is not None and not force and self._clock() - self._checked < self._every_s:
            return False
        with self._lock:
            if self._version is None:
                self._load(strict=False)
                return True
            if not force and self._clock() - self._checked < self._every_s:
                return False  # another thread just looked
            self._checked = self._clock()
            version, seen = self._read_version(), self._version
            if version == seen:
                return False
            if version < seen:  # a Redis restored from an older snapshot, or emptied: read everything again
                self._load(strict=False)
                return True
            self._apply(members(self._redis.zrangebyscore(self.store._keys.accounts_changes, f"({seen}", version)))
            self._version = version
            self.generation += 1
            return True

    def _apply(self, names: list[str]) -> None:
        """Read again the accounts ``names`` (created, changed or removed since the last look)."""
        accounts = dict(self._runtime)
        for name, stored in self.store.stored_many(names).items():
            account = self._account(stored, strict=False) if stored is not None else None
            if account is None:
                if accounts.pop(name, None) is not None:
                    log.info("accounts: %s removed", name)
            elif accounts.get(name) != account:
                log.info("accounts: %s %s", name, "changed" if name in accounts else "added")
                accounts[name] = account
        self._runtime = accounts  # swapped whole: readers in other threads see one or the other

    def _read_version(self) -> int:
        raw = self._redis.get(self.store._keys.accounts_version)
        return int(cast("bytes", raw)) if raw is not None else 0

    def _account(self, stored: Stored | None, *, strict: bool) -> Account | None:
        if stored is None or stored.name in self.file:  # the file wins (the API never stores such a name)
            return None
        try:
            return stored.account(self.store.cipher, sandbox_url=self.store._sandbox_url)
        except SecretsKeyError as exc:
            if strict:
                raise
            self._unreadable_once(stored, str(exc))
            return None
        except (KeyError, ValueError) as exc:  # a record not written by this version: one account left out
            self._unreadable_once(stored, f"account {stored.name!r}: its record in Redis does not load ({exc!r})")
            return None

    def _unreadable_once(self, stored: Stored, problem: str) -> None:
        mark = (stored.name, stored.fields.get("fp", ""))
        if mark not in self._unreadable:
            self._unreadable.add(mark)
            log.error("accounts: %s; not served", problem)

    def get(self, name: str) -> Account | None:
        """The account named ``name`` now (None: none), looking at once for one this view lacks."""
        account = self.file.by_name.get(name)
        if account is not None:
            return account
        self.refresh()
        account = self._runtime.get(name)
        if account is None and self._clock() - self._looked_for_unknown >= UNKNOWN_EVERY_S:
            self._looked_for_unknown = self._clock()
            self.refresh(force=True)
            account = self._runtime.get(name)
        return account

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    @property
    def runtime(self) -> dict[str, Account]:
        """The accounts created at runtime, as last seen (no refresh)."""
        return self._runtime

    def names(self) -> list[str]:
        """Every account's name, ``default`` first, then the file's, then the runtime ones."""
        self.refresh()
        return self.file.names + sorted(set(self._runtime) - set(self.file.by_name))

    def all(self) -> dict[str, Account]:
        """Every account, by name."""
        self.refresh()
        return {**self._runtime, **self.file.by_name}


__all__ = ["DEFAULT", "AccountRegistry"]
