"""Benchmark -- async: ``AsyncBridgeClient`` against ``BridgeClient``, submitting into a private Redis.

No worker and no API: what is measured is the producer's side, the checks and
the one Lua call per submission (``lua/submit.lua``). In one run, on one
Redis, alternating the sides round after round (the median of the rounds is
the figure):

- ``submit``, one operation after the other: the sync client, the async
  client awaiting each (the cost of the asyncio driver), and the async
  client with 100 submissions in flight (``asyncio.gather``), against the
  sync client from 8 threads (what an async producer had to do before);
- ``submit_many`` of 1,000 operations per call: the sync client, the async
  client, and the async client with 4 calls in flight.

Operations are checked as a real producer's are: against the API's OpenAPI
document (the sandbox's, stored first as the workers would) and with a
callback URL (``BRIDGE_CALLBACK_ALLOW_PRIVATE`` spares it a DNS lookup, which
the async client would do in a thread).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge import AsyncBridgeClient, BridgeClient
from optimum_bridge.devstack import RedisServer, bridge_settings, settings_from
from optimum_bridge.keys import Keys
from optimum_bridge.sandbox.document import build_document
from optimum_bridge.settings import Settings
from optimum_bridge.upstream.documents import DocumentStore

from .common import CALLBACK_SECRET, start_redis
from .report import median, print_table, utc_stamp, workspace, write_result


@dataclass(frozen=True)
class _NoApi:
    """The settings need an API address; nothing here calls it."""

    url: str = "http://127.0.0.1:9"
    token_url: str = "http://127.0.0.1:9/connect/token"


def operation(i: int) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": f"/Vehicles/P{i}",
        "priority": "bulk",
        "callback": {"url": "http://127.0.0.1:9/hook"},
        "metadata": {"i": i},
    }


def timed(work: Callable[[], Any], count: int) -> float:
    """Operations per second of ``work()``, which submits ``count`` operations."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def sides(
    settings: Settings, runner: asyncio.Runner, aclient: AsyncBridgeClient, *, n: int, batch: int
) -> dict[str, Callable[[], float]]:
    """Each measured side: a function that runs one round and returns its rate."""
    client = BridgeClient(settings)
    ops = [operation(i) for i in range(n)]
    many = [operation(i) for i in range(batch * 4)]

    def gathered(coroutines: Callable[[], list[Awaitable[Any]]]) -> Callable[[], Any]:
        async def all_of() -> None:
            await asyncio.gather(*coroutines())

        return lambda: runner.run(all_of())

    async def one_by_one() -> None:
        for op in ops:
            await aclient.submit(op)

    async def limited(limit: int) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(op: dict[str, Any]) -> None:
            async with gate:
                await aclient.submit(op)

        await asyncio.gather(*(one(op) for op in ops))

    def threads() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client.submit, ops))

    def sync_many() -> None:
        for start in range(0, len(many), batch):
            client.submit_many(many[start : start + batch])

    async def async_many() -> None:
        for start in range(0, len(many), batch):
            await aclient.submit_many(many[start : start + batch])

    chunks = [many[start : start + batch] for start in range(0, len(many), batch)]
    return {
        "sync submit": lambda: timed(lambda: [client.submit(op) for op in ops], n),
        "async submit (awaited one by one)": lambda: timed(lambda: runner.run(one_by_one()), n),
        "sync submit, 8 threads": lambda: timed(threads, n),
        "async submit, 100 in flight": lambda: timed(lambda: runner.run(limited(100)), n),
        f"sync submit_many ({batch} per call)": lambda: timed(sync_many, len(many)),
        f"async submit_many ({batch} per call)": lambda: timed(lambda: runner.run(async_many()), len(many)),
        "async submit_many, 4 calls in flight": lambda: timed(
            gathered(lambda: [aclient.submit_many(chunk) for chunk in chunks]), len(many)
        ),
    }


def measure(redis_proc: RedisServer, settings: Settings, *, rounds: int, n: int, batch: int) -> dict[str, list[float]]:
    """Every side's rate in each round, the sides alternating their order round after round."""
    document = DocumentStore(redis_proc.client(), Keys(settings.key_prefix))
    with asyncio.Runner() as runner:
        aclient = AsyncBridgeClient(settings)
        measured = sides(settings, runner, aclient, n=n, batch=batch)
        document.put("default", build_document())
        for side in measured.values():  # warm-up: connections, scripts loaded, the document's checker built
            side()
        rates: dict[str, list[float]] = {name: [] for name in measured}
        for round_ in range(rounds):
            order = list(measured) if round_ % 2 == 0 else list(reversed(measured))
            for name in order:
                rates[name].append(measured[name]())
            redis_proc.flush()  # the lanes start empty each round
            document.put("default", build_document())
        runner.run(aclient.aclose())
    return rates


def table(title: str, rates: dict[str, list[float]]) -> str:
    baseline = median(rates["sync submit"])
    rows = [[name, median(v), min(v), max(v), median(v) / baseline] for name, v in rates.items()]
    return print_table(title, ["side", "median ops/s", "min", "max", "x sync submit"], rows, digits=1)


def run(*, quick: bool) -> Path:
    """Quick: 3 rounds of 500 submits and 4 x 1,000 in submit_many. Full: 5 rounds of 2,000 and 4 x 1,000.

    Twice: operations checked against the document (``strict``, the default), then unchecked (``off``), which
    leaves the clients' own cost: the model, the callback check, the Lua call and its round trip.
    """
    rounds, n, batch = (3, 500, 1000) if quick else (5, 2000, 1000)
    stamp = utc_stamp()
    record: dict[str, Any] = {"rounds": rounds, "submits_per_round": n, "batch": batch}
    with workspace("async") as workdir:
        redis_proc = start_redis(workdir)
        try:
            for mode in ("strict", "off"):
                values = bridge_settings(
                    redis_proc.url,
                    _NoApi(),
                    prefix="async:",
                    callback_secret=CALLBACK_SECRET,
                    BRIDGE_LOG_LEVEL="WARNING",
                    BRIDGE_VALIDATE_OPERATIONS=mode,
                )
                rates = measure(redis_proc, settings_from(values), rounds=rounds, n=n, batch=batch)
                title = f"Submitting, BRIDGE_VALIDATE_OPERATIONS={mode} -- {rounds} rounds, private Redis, no worker"
                record[mode] = {"rates": rates, "table": table(title, rates)}
        finally:
            redis_proc.stop()
    path = write_result("async", record, stamp=stamp)
    print(f"\nwritten to {path}")
    return path
