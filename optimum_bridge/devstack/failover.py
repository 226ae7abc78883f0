"""A measured Redis failover under load (spec §16), shared by ``tests/faults/test_failover.py`` and
``python -m bench failover``.

The bridge runs on a Sentinel group (``devstack.sentinel``): real worker
processes, the ingress as a process, the sandbox and a callback receiver.
Two producers -- one through the ingress over HTTP, one through
``BridgeClient`` -- submit distinct operations at a steady pace, each with its
own idempotency key, and resubmit with the same key whatever is refused
(``503``, ``BridgeUnavailable``, a Redis error). Mid-run the primary is
SIGKILLed; after the promotion it is started again as a replica and, for a
second failover, the new primary is killed in turn. Then every acknowledged
job is read back: final or not, called how many times by the sandbox's own
log, its callback delivered how many times.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from optimum_bridge.devstack.env import settings_from
from optimum_bridge.devstack.failover_stack import Producers, Stack, start_stack, stop_stack
from optimum_bridge.devstack.receiver import CallbackReceiver
from optimum_bridge.devstack.sentinel import SentinelGroup
from optimum_bridge.devstack.waiting import WaitTimeout, wait_until
from optimum_bridge.errors import JobNotFound
from optimum_bridge.producer import BridgeClient

log = logging.getLogger(__name__)


@dataclass
class Kill:
    """One failover: when the primary died, which node took over, and when the bridge called again."""

    killed_port: int
    at: float  # time.monotonic() of the SIGKILL
    promoted_port: int = 0
    promoted_after_s: float = 0.0
    first_call_after_s: float | None = None  # first sandbox arrival after the sentinels could promote


@dataclass
class FailoverReport:
    """What one run kept and lost; ``figures`` is what the test asserts on and the bench prints."""

    min_replicas: int
    operations: int
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    refused: int = 0
    kills: list[Kill] = field(default_factory=list)
    not_final: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # acknowledged, then gone from Redis
    calls: Counter[str] = field(default_factory=Counter)  # sandbox arrivals by path
    arrivals: dict[str, list[float]] = field(default_factory=dict)  # their times (time.monotonic), by path
    attempts: dict[str, int] = field(default_factory=dict)  # job id -> attempts its final record counts
    callbacks: Counter[str] = field(default_factory=Counter)  # verified deliveries by job id
    with_callback: int = 0
    elapsed_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        """The run's figures, as JSON."""
        paths = {f"/Vehicles/{key.removeprefix('op-')}" for key in self.acknowledged}
        final = len(self.acknowledged) - len(self.not_final) - len(self.lost)
        return {
            "min_replicas": self.min_replicas,
            "operations": self.operations,
            "acknowledged": len(self.acknowledged),
            "final": final,
            "not_final": len(self.not_final),
            "lost": len(self.lost),
            "submissions_refused": self.refused,
            "called_twice": sum(1 for path in paths if self.calls[path] > 1),
            "extra_calls": sum(max(0, self.calls[path] - 1) for path in paths),
            "never_called": sum(1 for path in paths if self.calls[path] == 0),
            "callbacks_missing": sum(1 for job in self.acknowledged.values() if self.callbacks[job] == 0),
            "callbacks_duplicated": sum(1 for job in self.acknowledged.values() if self.callbacks[job] > 1),
            "kills": [
                {
                    "promoted_after_s": round(kill.promoted_after_s, 2),
                    "first_call_after_s": None
                    if kill.first_call_after_s is None
                    else round(kill.first_call_after_s, 2),
                    "back_to_first_primary": index > 0 and kill.promoted_port == self.kills[0].killed_port,
                }
                for index, kill in enumerate(self.kills)
            ],
            "elapsed_s": round(self.elapsed_s, 1),
            **({"twice": self.twice(paths)} if any(self.calls[path] > 1 for path in paths) else {}),
        }

    def twice(self, paths: set[str]) -> list[dict[str, Any]]:
        """Each operation called more than once: its job, the attempts its record counts, and when
        each call arrived, in seconds after the first kill (the kills' own times beside them)."""
        origin = self.kills[0].at if self.kills else 0.0
        jobs = {f"/Vehicles/{key.removeprefix('op-')}": job for key, job in self.acknowledged.items()}
        return [
            {
                "job": jobs[path],
                "attempts": self.attempts.get(jobs[path]),
                "calls_at_s": [round(t - origin, 3) for t in self.arrivals.get(path, [])],
                "kills_at_s": [round(kill.at - origin, 3) for kill in self.kills],
            }
            for path in sorted(paths)
            if self.calls[path] > 1
        ]


def run_failover(
    group: SentinelGroup,
    env: dict[str, str],
    workdir: Path,
    *,
    sandbox_stats: Callable[[], dict[str, Any]],
    receiver: CallbackReceiver,
    plates: list[str],
    operations: int = 1000,
    kills: int = 2,
    down_after_s: float = 1.0,
    settle_timeout_s: float = 60.0,
    workers: int = 2,
    concurrency: int = 8,
) -> FailoverReport:
    """Submit ``operations`` while killing the primary ``kills`` times; what was kept and lost."""
    min_replicas = int(env.get("BRIDGE_REDIS_MIN_REPLICAS", "0"))
    report = FailoverReport(min_replicas, operations)
    stack = start_stack(group, env, workdir, workers=workers, concurrency=concurrency)
    started = time.monotonic()
    producers = Producers(stack, report, plates, receiver)
    try:
        producers.start()
        for number in range(kills):
            threshold = operations * (number + 1) // (kills + 2)
            _wait_acknowledged(producers, threshold)
            if number > 0:
                _only_the_first_primary_left(group)
            report.kills.append(_fail_over(group, stack))
            _wait_calls_after(report.kills[-1].at + down_after_s, sandbox_stats)
        producers.join(timeout=300)
        _settle(report, stack, settle_timeout_s)
        _wait_callbacks(report, stack, receiver, settle_timeout_s)
    finally:
        report.elapsed_s = time.monotonic() - started
        producers.stopping.set()
        producers.join(timeout=40)  # a producer blocked in a Redis retry gives up within ~11 s
        stop_stack(stack)
    entries = sandbox_stats()["log"]
    report.calls = Counter(entry["path"] for entry in entries)
    for entry in entries:
        report.arrivals.setdefault(entry["path"], []).append(entry["t"])
    for kill in report.kills:
        arrivals = [e["t"] for e in sandbox_stats()["log"] if e["t"] > kill.at + down_after_s]
        kill.first_call_after_s = (min(arrivals) - kill.at) if arrivals else None
    with receiver.cond:
        report.callbacks = Counter(str(r.payload["data"]["id"]) for r in receiver.received if r.payload)
    return report


def _wait_calls_after(moment: float, sandbox_stats: Callable[[], dict[str, Any]]) -> None:
    """The next failover only once the bridge calls again: each is measured on its own."""
    wait_until(
        lambda: any(e["t"] > moment for e in sandbox_stats()["log"][-50:]),
        timeout=60,
        interval=0.1,
        what="calls after the failover",
    )


def _wait_acknowledged(producers: Producers, count: int) -> None:
    wait_until(lambda: producers.acknowledged() >= count, timeout=120, what=f"{count} submissions")


def _only_the_first_primary_left(group: SentinelGroup) -> None:
    """The first primary back as a replica, the other replicas stopped: the next failover goes back to it.

    Not by ``replica-priority``: the sentinels would then prefer it to a more up-to-date replica,
    and a write ``WAIT`` saw only there would be lost. Stopped, the others are started again (as
    replicas) once the failover is over.
    """
    first = group.killed[0]
    group.revive(first)
    primary = group.primary()
    for node in group.nodes:
        if node not in (first, primary) and node not in group.killed:
            group.take_out(node)


def _fail_over(group: SentinelGroup, stack: Stack) -> Kill:
    for worker in stack.workers:
        worker.check_running()
    primary = group.kill_primary()
    kill = Kill(primary.port, time.monotonic())  # within a millisecond of the SIGKILL
    promoted = group.wait_promoted(primary.port, timeout=60)
    kill.promoted_port, kill.promoted_after_s = promoted.port, time.monotonic() - kill.at
    for node in [n for n in group.killed if n is not primary and n.process.poll() is not None]:
        group.revive(node)  # a replica taken out for this failover: back, so that WAIT finds it
    log.info("failover: %s -> %s in %.1fs", primary.port, promoted.port, kill.promoted_after_s)
    return kill


def _settle(report: FailoverReport, stack: Stack, timeout_s: float) -> None:
    """Wait until every acknowledged job is final or gone; record those that are neither."""
    client = BridgeClient(settings_from(stack.env))
    pending = dict(report.acknowledged)
    lost: set[str] = set()

    def done() -> bool:
        for key, job in list(pending.items()):
            try:
                status = client.get(job)
                if status.finished:
                    report.attempts[job] = status.attempts
                    del pending[key]
            except JobNotFound:
                lost.add(job)
                del pending[key]
            except redis.RedisError:
                return False
        return not pending

    try:
        wait_until(done, timeout=timeout_s, interval=0.5, what="every acknowledged job to finish")
    except WaitTimeout:
        log.warning("failover: %d acknowledged job(s) not final", len(pending))
    finally:
        client.close()
    report.not_final = sorted(pending.values())
    report.lost = sorted(lost)


def _wait_callbacks(report: FailoverReport, stack: Stack, receiver: CallbackReceiver, timeout_s: float) -> None:
    final = set(report.acknowledged.values()) - set(report.not_final) - set(report.lost)
    report.with_callback = len(final)
    try:
        receiver.wait(lambda: final <= set(receiver.verified), timeout=timeout_s, what="every callback")
    except WaitTimeout:
        log.warning("failover: %d callback(s) missing", len(final - set(receiver.verified)))
