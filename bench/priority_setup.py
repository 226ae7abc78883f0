"""The parts of ``bench.priority``: the two designs, the plans, the operations, the old tree and its producer.

``extract_old`` puts the old design's ``optimum_bridge`` in the scratch
directory; ``Driver`` is ``bench.submitter`` in a subprocess, so each design
submits with its own ``BridgeClient``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge.devstack import RedisServer
from optimum_bridge.devstack.processes import stop_process
from optimum_bridge.quota.rate import Quota, RateLimit

from .common import PLATES, SandboxProc, env_with_path
from .report import ROOT

OLD_COMMIT = "8dbc670"
PROCS, THREADS = 2, 4
MARGIN_S = {"s": "0.15", "m": "0.25"}  # per window unit: as bench.quota (the default at minutes)
SEED = 20261202


@dataclass(frozen=True)
class Design:
    """One side of the comparison: which ``optimum_bridge`` runs, and whether it knows priorities."""

    name: str
    pythonpath: str | None  # None: this tree
    priorities: bool


@dataclass(frozen=True)
class Plan:
    """One quota's scenario."""

    quota: str
    bulk: int
    urgent: int
    gap_s: float


FULL = [Plan("60/m", 150, 10, 7.0), Plan("30/m", 150, 10, 7.0)]
QUICK = [Plan("10/s", 40, 6, 0.5)]
FORECAST_FULL = ("60/m", 60, 20)  # quota, single jobs, batch size
FORECAST_QUICK = ("10/s", 30, 10)


def margin(quota: str) -> str:
    return MARGIN_S["s" if quota.endswith("/s") else "m"]


def interval_s(quota: str) -> float:
    """The scheduler's slot interval at this quota: (window + margin) / limit."""
    return Quota.of(RateLimit.parse(quota), margin_s=float(margin(quota))).interval_s


def vehicle(index: int, priority: str | None) -> dict[str, Any]:
    """An urgent job: its path names it in the sandbox's call log."""
    op: dict[str, Any] = {"method": "GET", "path": f"/Vehicles/{PLATES[index % len(PLATES)]}"}
    return op | ({"priority": priority} if priority else {})


class Driver:
    """``bench.submitter`` in a subprocess: a producer for the design on its path."""

    def __init__(self, values: dict[str, str], design: Design, workdir: Path) -> None:
        env = env_with_path(values, design.pythonpath)
        self._stderr = (workdir / "submitter.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.submitter"],
            env=env,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("the submitter has no pipes")
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the submitter exited (code {self.process.poll()}); see submitter.log")
        reply = dict(json.loads(line))
        if "error" in reply:
            raise RuntimeError(f"submitter: {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        stop_process(self.process, grace_s=5)  # type: ignore[arg-type]
        self._stderr.close()


@dataclass
class Stack:
    redis: RedisServer
    sandbox: SandboxProc
    workdir: Path
    old: Path


def check_package(design: Design, where: str, what: str) -> None:
    """Fail loudly unless ``where`` (a module path) is the tree ``design`` says."""
    expected = design.pythonpath or str(ROOT)
    if not where.startswith(expected):
        raise RuntimeError(f"{what} of design {design.name!r} imported {where}, expected under {expected}")
