"""Where a bridge worker spends its time at full speed: py-spy on one worker process.

``python -m bench profile`` (needs ``pip install py-spy``; not a project
dependency). Sandbox without quota or latency, one worker process with 4
threads, a backlog of operations drained end to end while py-spy samples the
worker (only the thread holding the GIL: where the CPU goes). The samples are grouped by the
first frame that belongs to the bridge (what our code asked for) and by the
deepest library frame (who spent the time), and printed as two tables; the
raw collapsed stacks go to ``bench/results/`` for a flame graph.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import bridge_settings, start_workers
from .receiver import start_services
from .report import RESULTS, print_table, utc_stamp, workspace

PLATES = generate_fleet(42, 60).plates()
LIBRARIES = ("celery", "kombu", "redis", "httpx", "httpcore", "pydantic", "billiard", "json", "ssl", "socket", "h11")


def owner(frame: str) -> str:
    """``func (path/to/module.py:12)`` → a short owner: ``optimum_bridge.jobs.executor`` or a library name."""
    path = "/" + frame[frame.rfind("(") + 1 :].split(":", maxsplit=1)[0]  # py-spy prints paths from site-packages
    if "/optimum_bridge/" in path:
        return "optimum_bridge." + Path(path).stem
    for library in LIBRARIES:
        if f"/{library}/" in path or path.endswith(f"/{library}.py"):
            return library
    return "python stdlib" if path.count("/") <= 2 or "<frozen" in path else "other: " + path.split("/")[1]


def summarise(collapsed: Path) -> tuple[Counter[str], Counter[str], int]:
    """Samples by bridge entry point (first bridge frame) and by spender (last frame's owner)."""
    by_entry: Counter[str] = Counter()
    by_spender: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        bridge = [f for f in frames if "optimum_bridge/" in f]
        by_entry[bridge[0].split(" (")[0] + " @ " + owner(bridge[0]) if bridge else "(no bridge frame)"] += count
        by_spender[owner(frames[-1])] += count
    return by_entry, by_spender, total


def run(*, quick: bool) -> Path:
    count = 1000 if quick else 3000
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    with workspace("profile") as workdir, ExitStack() as stop:
        redis_proc, sandbox, receiver = start_services(stop, workdir, quota=None)
        values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT="100000/s")
        workers = start_workers(values, count=1, concurrency=4, workdir=workdir)
        stop.callback(stop_workers, workers)
        client = BridgeClient(settings_from(values))
        stop.callback(client.close)
        op = {"method": "GET", "callback": {"url": receiver.url}}
        receiver.wait_for(client.submit_many([op | {"path": f"/Vehicles/{p}"} for p in PLATES[:50]]), timeout=60)
        collapsed = RESULTS / f"profile-{utc_stamp()}.txt"
        record = [spy, "record", "--pid", str(workers[0].process.pid), "--format", "raw", "--rate", "250", "--gil"]
        record += ["--output", str(collapsed), "--nonblocking"]
        py_spy_log = (workdir / "py-spy.log").open("wb")
        stop.callback(py_spy_log.close)
        sampler = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=py_spy_log)
        stop.callback(lambda: None if sampler.poll() is not None else sampler.kill())
        time.sleep(1.0)  # py-spy attaches
        if sampler.poll() is not None:
            raise RuntimeError(f"py-spy exited ({sampler.returncode}): {(workdir / 'py-spy.log').read_text()}")
        started = time.monotonic()
        ids = client.submit_many([op | {"path": f"/Vehicles/{PLATES[i % len(PLATES)]}"} for i in range(count)])
        receiver.wait_for(ids, timeout=600)
        elapsed = time.monotonic() - started
        sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
        sampler.wait(30)
    by_entry, by_spender, total = summarise(collapsed)
    print(f"\n{count} operations in {elapsed:.1f} s ({count / elapsed:.0f} ops/s), {total} samples (non-idle)")
    rows = [[name, n, f"{100 * n / total:.1f} %"] for name, n in by_entry.most_common(15)]
    print_table("Samples by the bridge's first frame (what our code asked for)", ["entry", "samples", "share"], rows)
    rows = [[name, n, f"{100 * n / total:.1f} %"] for name, n in by_spender.most_common(12)]
    print_table("Samples by who was on the CPU (deepest frame)", ["owner", "samples", "share"], rows)
    print(f"collapsed stacks: {collapsed}")
    return collapsed
