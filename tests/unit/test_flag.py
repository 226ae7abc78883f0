"""``SharedFlag``: set in a process, seen by the processes forked from it before it was set."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from optimum_bridge.process import runtime
from optimum_bridge.process.flag import SharedFlag
from tests.support import settings_from


def _wait_for(flag: SharedFlag, seen: multiprocessing.synchronize.Event) -> None:
    while not flag.is_set():
        pass
    seen.set()


def test_a_child_forked_before_the_flag_was_set_sees_it() -> None:
    ctx = multiprocessing.get_context("fork")
    flag, seen = SharedFlag(), ctx.Event()
    child = ctx.Process(target=_wait_for, args=(flag, seen), daemon=True)
    child.start()
    assert not seen.wait(0.2)  # not set yet
    flag.set()
    assert seen.wait(10), "the child never saw the flag"
    child.join(10)


def test_a_runtime_rebuilt_after_a_fork_keeps_the_draining_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    # runtime.current() rebuilds the runtime when the pid changed (a pool's child): the flag stays.
    monkeypatch.setattr(runtime, "_current", runtime._current)  # restored afterwards
    parent = runtime.install(settings_from({"BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"}))
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    child = runtime.current()
    assert child is not parent and child.draining is parent.draining
    assert isinstance(parent.draining, SharedFlag) and not isinstance(parent.draining, threading.Event)
