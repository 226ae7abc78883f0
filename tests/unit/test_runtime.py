"""A process forked while another thread is inside the runtime still gets a working runtime.

The prefork pool forks its children from a worker whose upkeep thread is
running. Any lock that thread holds at that instant stays locked, forever,
in the child. On Python 3.11 ``functools.cached_property`` holds one lock per
property for every instance, so a child's first task used to hang on
``runtime.current().executor`` and its message was never taken (seen as
"its message was not taken by a worker in time" with
``celery -A optimum_bridge.worker worker``).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from optimum_bridge.process import runtime
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.settings import Settings

#: What a forked child is given to finish; it needs milliseconds.
CHILD_TIMEOUT_S = 20.0


def child_exit_code(work) -> int | None:
    """Fork; the child runs ``work`` and exits 0 (1 if it raised). None if it hung past the timeout."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def fork_while(busy, inside: threading.Event, release: threading.Event) -> int | None:
    """Run ``busy`` in a thread; once it is ``inside``, fork a child that reads ``runtime.current().keys``."""
    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    assert inside.wait(5)
    try:
        return child_exit_code(lambda: runtime.current().keys)
    finally:
        release.set()
        thread.join(5)


@pytest.fixture
def installed():
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    yield runtime.install(settings)
    runtime.current().close()


def test_a_child_forked_while_a_thread_builds_a_part_builds_its_own(installed, monkeypatch):
    parent = os.getpid()
    inside, release = threading.Event(), threading.Event()
    lazy_keys = Runtime.__dict__["keys"]
    build = lazy_keys.build

    def slow_in_parent(rt: Runtime):
        if os.getpid() == parent:
            inside.set()
            release.wait(CHILD_TIMEOUT_S * 2)
        return build(rt)

    monkeypatch.setattr(lazy_keys, "build", slow_in_parent)
    code = fork_while(lambda: installed.keys, inside, release)  # the thread is inside the build
    assert code == 0, "the forked child hung building its runtime" if code is None else f"child exited {code}"


def test_a_child_forked_while_a_thread_holds_the_runtime_lock_gets_a_runtime(installed):
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runtime._lock:
            held.set()
            release.wait(CHILD_TIMEOUT_S * 2)

    code = fork_while(hold, held, release)
    assert code == 0, "the forked child hung in runtime.current()" if code is None else f"child exited {code}"


def test_a_runtime_builds_each_part_once_across_threads(installed):
    seen = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        seen.append(installed.keys)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(seen) == 8 and len({id(keys) for keys in seen}) == 1


@pytest.mark.parametrize(("min_replicas", "taking"), [(0, True), (1, False)])
def test_threads_take_their_next_job_unless_writes_wait_for_replicas(min_replicas, taking):
    """With BRIDGE_REDIS_MIN_REPLICAS every job goes through the dispatcher and its claim (see runtime.py)."""
    settings = Settings(_env_file=None, BRIDGE_REDIS_MIN_REPLICAS=min_replicas)  # type: ignore[call-arg]
    rt = Runtime(settings)
    try:
        assert (rt.executor.chain_s > 0) is taking
    finally:
        rt.close()
