"""Benchmark -- several accounts on one pool of workers: does one account slow another?

Three Optimum accounts (``BRIDGE_ACCOUNTS_FILE``), each with its own client in
the sandbox and its own quota there (10/s, 5/s and 2/s: unequal on purpose, so
that a scheduler splitting the total, or taking turns between accounts, would
show), are served by one pool of 2 worker processes x 4 threads. The sandbox
answers each call after 100 ms, so a call holds a worker thread as a real one
does and the accounts really share the pool's threads. Same workers, same
Redis, same sandbox for every phase of the run:

1. **quota use**: a backlog of k whole windows on each account (60 jobs: 6,
   12 and 30 windows), first one account at a time, then the three submitted at
   the same moment. An account's use = its accepted calls / (first-to-last
   accepted arrival + one window) / its quota, from the sandbox's call log
   (``report.achieved_rate``, as ``quota``); the figure is together / alone.
   "paced" is what the limiter's pacer gives by design for that many calls:
   n / ((n - 1) x (window + margin) / N + window) / quota.
2. **start latency**: jobs submitted one at a time to account B (spaced 1 s
   plus 0-50 ms of seeded jitter, so they do not stay in phase with the
   dispatcher's 50 ms idle poll),
   first with account A idle, then while A drains a deep backlog. Latency =
   submission (wall clock just before ``submit``) -> the job's ``started_at``
   (the worker's wall clock just before it sends the call).

Every account's token is fetched by a warm-up job first, so no phase pays it.

3. **many accounts** (issue 17, ``bench.many_accounts``): 1,000 accounts at 6/m
   with backlogs on their own stack (200 with ``--quick``).
4. **onboarding** (issue 18, ``bench.onboarding``): ``POST /v1/accounts`` -> that
   account's first call with 1,000 accounts present, Redis bytes per idle account
   and ``/ui`` at 10,000 (200 / 2,000 with ``--quick``), on their own stack; its own
   result file too.

Phases 1 and 2 are ``bench.few_accounts``. ``BENCH_ACCOUNTS=few|many|onboarding``
runs only phases 1 and 2, 3, or 4.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import few_accounts, many_accounts, onboarding
from .report import workspace, write_result


def run(*, quick: bool) -> Path:
    """Full: 60 jobs per account, 200 on A with 10 on B (about 2.5 min), then 1,000 accounts (about
    5 min), then onboarding (about 1 min). Quick: 20, 60 and 5, then 200 accounts (about 2 min),
    then onboarding among 200."""
    which = os.environ.get("BENCH_ACCOUNTS", "all")
    if which not in ("all", "few", "many", "onboarding"):
        raise SystemExit(f"BENCH_ACCOUNTS: {which!r} is none of all, few, many, onboarding")
    record: dict[str, Any] = {"quick": quick}
    with workspace("accounts") as workdir:
        if which in ("all", "few"):
            record |= few_accounts.run_phase(quick=quick, workdir=workdir)
        if which in ("all", "many"):
            plan = many_accounts.QUICK if quick else many_accounts.FULL
            record["many_accounts"] = many_accounts.run_phase(plan, workdir)
    if which in ("all", "onboarding"):
        written = onboarding.run(quick=quick)
        figures = json.loads(written.read_text())
        record["onboarding"] = {"result": written.name} | {k: v for k, v in figures.items() if k != "table"}
    path = write_result("accounts", record)
    print(f"\nwrote {path}")
    return path
