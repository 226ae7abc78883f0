"""Test tiers, decided from what each test uses rather than from a list kept by hand.

Three tiers, as Celery splits ``t/unit``, ``t/integration`` and ``t/smoke``:

- **fast** (no marker): no Redis and no process of its own -- pure policy,
  schemas, the executor over in-memory stores, the ingress app in-process,
  the sandbox in a thread. ``make test-fast`` runs only these.
- ``redis``: the test uses a fixture that needs Redis (``REDIS_FIXTURES``),
  directly or through another fixture.
- ``processes``: the test starts processes: it uses a fixture that does
  (``PROCESS_FIXTURES``), lives in ``tests/faults/``, or is marked
  ``@pytest.mark.processes`` by hand (a subprocess no fixture reveals). Most
  of these need Redis too and carry both markers.

The markers follow the fixtures, so a new test lands in the right tier
without anyone updating a list. What fixtures cannot reveal is caught at run
time: a test with neither marker that starts a subprocess (a worker, a
redis-server, the CLI) fails, saying which marker it needs -- so the fast
tier cannot quietly grow slow or start needing Redis.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator
from typing import Any

import pytest

REDIS_FIXTURES = frozenset({"redis_server", "prefix", "private_redis", "runtime", "sentinel_group"})
PROCESS_FIXTURES = frozenset({"workers", "api_process"})
PROCESS_DIRS = frozenset({"faults"})
TIERS = ("redis", "processes")


def tiers_of(item: pytest.Item) -> set[str]:
    """The tier markers ``item`` gets from its fixtures and its folder."""
    fixtures = set(getattr(item, "fixturenames", ()))
    tiers = set()
    if fixtures & REDIS_FIXTURES:
        tiers.add("redis")
    if fixtures & PROCESS_FIXTURES or PROCESS_DIRS & set(item.path.parent.parts):
        tiers.add("processes")
    return tiers


def is_fast(item: pytest.Item) -> bool:
    """Whether ``item`` belongs to the fast tier (no tier marker at all)."""
    return not any(item.get_closest_marker(name) for name in TIERS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in sorted(tiers_of(item)):
            if item.get_closest_marker(tier) is None:
                item.add_marker(tier)


class SlowTierLeak(BaseException):
    """A fast-tier test started a process (a ``BaseException``: no ``except Exception`` may hide it)."""


def _refuse_process(item: pytest.Item) -> Any:
    def execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise SlowTierLeak(
            f"{item.nodeid} starts a process ({args!r:.120}) but has no tier marker: "
            "use a fixture that needs it or mark the test @pytest.mark.processes (tests/support/tiers.py)"
        )

    return execute_child


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Run a fast-tier test with ``subprocess`` refusing to start anything."""
    if not is_fast(item):
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", _refuse_process(item))
        return (yield)
