"""Where the Redis commands of an operation go: ``MONITOR`` while one worker runs GETs with signed callbacks.

One bridge worker (``-c 4``, threads), the sandbox without quota or latency,
the bench's receiver. After a warm-up, ``MONITOR`` records every command while
``count`` operations (GET + signed callback) are submitted with ``submit_many``
and their callbacks verified, then as many again submitted one at a time
(``submit``). Each command is attributed to who sent it: a command run inside a
script to that script (``MONITOR`` shows the ``EVALSHA``, then its commands,
never interleaved), each script's ``EVALSHA`` to it too; a plain command to its
name and the shape of its first key (ids replaced by ``*``). The figures are
commands per operation; the idle timers of the worker (heartbeat, recoveries)
are in them, as they are in ``overhead``'s count.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers
from optimum_bridge.lua import scripts

from .common import bridge_settings, start_workers
from .overhead import PLATES
from .receiver import start_services
from .report import print_table, utc_stamp, workspace, write_result

UNLIMITED = "100000/s"
PREFIX = "cmd:"
#: Ids in key names (job ids, uuids, numbers) become ``*``, so keys of one kind count together.
_ID = re.compile(r"[0-9a-f]{16,}|\d+")


def script_names() -> dict[str, str]:
    """Every script's SHA1 (as ``EVALSHA`` names it) -> its name."""
    names = {}
    for entry in resources.files("optimum_bridge.lua").iterdir():
        name = entry.name.removesuffix(".lua")
        if entry.name.endswith(".lua") and not name.startswith("_"):
            names[hashlib.sha1(scripts.source(name).encode()).hexdigest()] = name
    return names


def who(command: str, shas: dict[str, str]) -> tuple[str, str]:
    """(sender, command name) of one ``MONITOR`` command line of a client (not a script)."""
    parts = command.split(" ", 2)  # redis-py gives the line unquoted, its words joined by spaces
    name = parts[0].upper()
    if name in ("EVALSHA", "EVAL"):
        return f"{shas.get(parts[1], parts[1][:8])}.lua", name
    key = _ID.sub("*", parts[1].removeprefix(PREFIX)) if len(parts) > 1 else ""
    return f"plain {name} {key}".rstrip(), name


def attribute(lines: list[dict[str, Any]], shas: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """Commands by sender (a script's inner commands go to the last ``EVALSHA`` seen), and the
    scripts' inner commands by script and command name."""
    counts: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    current = "?"
    for line in lines:
        if line.get("client_type") == "lua":
            counts[current] += 1
            inner[f"{current} {str(line['command']).split(' ', 1)[0].upper()}"] += 1
            continue
        sender, name = who(str(line["command"]), shas)
        if name in ("EVALSHA", "EVAL"):
            current = sender
        counts[sender] += 1
    return counts, inner


def record(url: str, stop: threading.Event, lines: list[dict[str, Any]]) -> None:
    """Append every ``MONITOR`` line to ``lines`` until ``stop`` is set (and one more command comes)."""
    client = redis.Redis.from_url(url)
    with client.monitor() as monitor:  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        for line in monitor.listen():
            lines.append(line)
            if stop.is_set():
                break


def run(*, quick: bool) -> Path:
    """Quick: 100 operations; full: 300."""
    count = 100 if quick else 300
    stamp = utc_stamp()
    with workspace("commands") as workdir, ExitStack() as stop:
        redis_proc, sandbox, receiver = start_services(stop, workdir, quota=None)
        values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT=UNLIMITED, BRIDGE_KEY_PREFIX=PREFIX)
        workers = start_workers(values, count=1, concurrency=4, workdir=workdir)
        stop.callback(stop_workers, workers)
        client = BridgeClient(settings_from(values))

        def submit(n: int, *, one_by_one: bool = False) -> None:
            paths = [f"/Vehicles/{PLATES[i % len(PLATES)]}" for i in range(n)]
            ops = [{"method": "GET", "path": p, "coalesce": False, "callback": {"url": receiver.url}} for p in paths]
            ids = [client.submit(op) for op in ops] if one_by_one else client.submit_many(ops)
            receiver.wait_for(ids, timeout=120.0)

        submit(20)  # warm-up: scripts loaded, token fetched, the OpenAPI document asked for
        # A producer asks Redis for the document's version at every check until a worker stored it
        # (then once every few seconds): wait for it, as a bridge that has run a while has it.
        version = f"{PREFIX}openapi:default:version"
        deadline = time.monotonic() + 15.0
        while not redis_proc.client().exists(version) and time.monotonic() < deadline:
            time.sleep(0.2)
        submit(20)

        def monitored(one_by_one: bool) -> tuple[list[dict[str, Any]], float]:
            lines: list[dict[str, Any]] = []
            done = threading.Event()
            thread = threading.Thread(target=record, args=(redis_proc.url, done, lines), daemon=True)
            thread.start()
            time.sleep(0.5)
            started = time.monotonic()
            submit(count, one_by_one=one_by_one)
            elapsed = time.monotonic() - started
            done.set()
            redis_proc.client().ping()  # one more command, so the monitor sees ``done``
            thread.join(5.0)
            return lines, elapsed

        # As a producer with many operations sends them (``submit_many``: one script call per batch),
        # then as one that sends each on its own (``submit``).
        lines, elapsed = monitored(one_by_one=False)
        single_lines, _ = monitored(one_by_one=True)
    counts, inner = attribute(lines, script_names())
    single, _ = attribute(single_lines, script_names())
    total = sum(counts.values())
    total_single = sum(single.values())
    rows = [[sender, n / count] for sender, n in counts.most_common()]
    inner_rows = [[what, n / count] for what, n in sorted(inner.items()) if n / count >= 0.05]
    inner_text = print_table("Inside the scripts, per operation", ["script and command", "per op"], inner_rows)
    text = print_table(
        f"Redis commands per operation by sender ({count} operations, 1 worker x 4)", ["who", "per op"], rows
    )
    print(f"total: {total / count:.1f} commands per operation, over {elapsed:.1f} s (submitted in one batch)")
    print(
        f"total: {total_single / count:.1f} commands per operation submitted one at a time "
        f"(submit.lua: {single['submit.lua'] / count:.1f} per operation, against {counts['submit.lua'] / count:.1f})"
    )
    text += (
        f"\ntotal: {total / count:.1f} commands per operation (one batch), {total_single / count:.1f} (one at a time)"
    )
    result = {
        "count": count,
        "seconds": elapsed,
        "per_op": {s: n / count for s, n in counts.most_common()},
        "inside_scripts_per_op": {s: n / count for s, n in sorted(inner.items())},
        "one_at_a_time_per_op": {s: n / count for s, n in single.most_common()},
        "total_per_op_one_at_a_time": total_single / count,
    }
    path = write_result(
        "commands", {**result, "total_per_op": total / count, "tables": [inner_text, text]}, stamp=stamp
    )
    print(f"\nwrote {path}")
    return path
