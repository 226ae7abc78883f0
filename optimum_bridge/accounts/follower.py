"""A worker's dispatch follows the accounts created, changed or removed at runtime (spec §12a).

Run by the upkeep loop (``process.upkeep``) every second: one command when
nothing changed, whatever the number of accounts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from optimum_bridge.quota.rate import STATE_FIELD

if TYPE_CHECKING:
    from optimum_bridge.process.runtime import Runtime

log = logging.getLogger(__name__)


class AccountsFollower:
    """Brings this worker along when accounts are created, changed or removed at runtime (spec §12a).

    The registry looks at the version (one command); when it saw a change, the dispatcher's
    quotas follow: a new or changed account's quota is stored for the dispatch script (and the
    account put in the ready set if work waits), a removed one's is forgotten. The diff is over
    every account, but only when something changed, never per account on a timer.
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._generation = -1

    def run(self) -> None:
        """Look for changes; follow them."""
        registry = self._rt.registry
        registry.refresh()
        if registry.generation == self._generation:
            return
        self._generation = registry.generation
        quotas = self._rt.quotas()
        dispatcher = self._rt.dispatcher
        gone = [name for name in dispatcher.quotas if name not in quotas]
        changed = [name for name, quota in quotas.items() if dispatcher.quotas.get(name) != quota]
        if not gone and not changed:
            return
        dispatcher.quotas = quotas  # replaced whole: the dispatch thread reads one or the other
        if "forecaster" in self._rt.__dict__:  # its readers only look names up: changed in place
            forecasts = self._rt.forecaster.steps.quotas
            forecasts.update({name: quotas[name] for name in changed})
            for name in gone:
                forecasts.pop(name, None)
        if gone:  # a worker that had not yet seen the removal may have stored it again
            keys = self._rt.keys
            with self._rt.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(keys.quotas, *gone)
                for name in gone:
                    pipe.hdel(keys.limiter_state(name), STATE_FIELD)
                pipe.execute()
        if changed:
            dispatcher.publish(changed)
        log.info("accounts: %d new or changed, %d removed; quotas follow", len(changed), len(gone))
