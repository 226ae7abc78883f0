"""Latency timers inside a real bridge worker, installed from outside the package.

Used by the ``latency`` benchmark (``bench.worker_entry --kind instrumented``).
Celery's ``task_prerun``/``task_postrun`` signals mark when the execute and
callback tasks start and end; the worker's ``Runtime`` objects are wrapped in
place (instance attributes shadowing methods: ``tokens.get``,
``jobs.mark_sent`` (the claim's quota check and the "call sent" record), the API
``httpx.Client.request`` and ``jobs.complete``),
so the executor's own code path runs unchanged and only gains clock reads.
Times are ``time.monotonic()`` (one clock for every process on the machine)
and are written once per task, after it ends, to the hash ``benchlat:<job id>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun, task_prerun

from optimum_bridge.keys import DELIVER_TASK, EXECUTE_TASK
from optimum_bridge.process import runtime

KEY = "benchlat:"
_local = threading.local()
_lock = threading.Lock()
_wrapped: set[int] = set()


def _spans() -> dict[str, float] | None:
    spans: dict[str, float] | None = getattr(_local, "spans", None)
    return spans


def _add(name: str, seconds: float) -> None:
    spans = _spans()
    if spans is not None:
        spans[name] = spans.get(name, 0.0) + seconds


def _timed(fn: Callable[..., Any], name: str, *, token: bool = False) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inside_token = getattr(_local, "in_token", False)
        if token:
            _local.in_token = True
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            if token:
                _local.in_token = inside_token
            if token or not inside_token:  # a token fetch's own HTTP counts as token time
                _add(name, time.monotonic() - started)

    return wrapper


def _mark_after(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            spans = _spans()
            if spans is not None:
                spans[name] = time.monotonic()

    return wrapper


def _wrap(rt: runtime.Runtime) -> None:
    with _lock:
        if id(rt) in _wrapped:
            return
        executor = rt.executor  # builds tokens, limiter, API client and job store
        rt.tokens.get = _timed(rt.tokens.get, "token_s", token=True)  # type: ignore[method-assign]
        rt.jobs.mark_sent = _timed(rt.jobs.mark_sent, "sent_s")  # type: ignore[method-assign]
        rt.api_http.request = _timed(rt.api_http.request, "api_s")  # type: ignore[method-assign]
        rt.jobs.finish = _mark_after(rt.jobs.finish, "complete_end")  # type: ignore[method-assign]
        _wrapped.add(id(rt))
        del executor


def _prerun(task: Any = None, args: Any = None, **_: Any) -> None:
    if task is None or task.name not in (EXECUTE_TASK, DELIVER_TASK):
        return
    _wrap(runtime.current())
    _local.spans = {"start": time.monotonic()}


def _postrun(task: Any = None, args: Any = None, **_: Any) -> None:
    spans = _spans()
    if task is None or spans is None or not args:
        return
    spans["end"] = time.monotonic()
    _local.spans = None
    side = "exec" if task.name == EXECUTE_TASK else "cb"
    fields = {f"{side}_{name}": value for name, value in spans.items()}
    runtime.current().redis.hset(KEY + str(args[0]), mapping=fields)  # type: ignore[arg-type]


def install() -> None:
    """Connect the timers (call before the worker starts)."""
    task_prerun.connect(_prerun, weak=False)
    task_postrun.connect(_postrun, weak=False)
