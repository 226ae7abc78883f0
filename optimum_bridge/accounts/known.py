"""A producer's check that an operation's account exists (spec §12a: a removed one is refused, naming it).

Accounts of the accounts file are known without asking; any other name is
looked up in the runtime accounts' index (one ``ZSCORE``, as a step, for the
blocking and the asyncio client alike), once per submission and account: a
batch of a thousand operations of one account asks once. A job that slips in
as its account is removed is cancelled by the workers' sweep of removed
accounts (``accounts.removal``).
"""

from __future__ import annotations

from optimum_bridge.keys import Keys
from optimum_bridge.steps import Command, Steps


class KnownAccounts:
    """Whether an account created at runtime exists (no cache: a removal is seen at once)."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    def exists(self, name: str, *, found: set[str] | None = None) -> Steps[bool]:
        """Whether ``name`` is an account created at runtime; ``found``: names already found by this submission."""
        if found is not None and name in found:
            return True
        score = yield Command("ZSCORE", (self._keys.accounts, name))
        if score is None:
            return False
        if found is not None:
            found.add(name)
        return True
