"""One run's bookkeeping: scratch directory, statistics, tables and the results files.

``workspace`` gives a benchmark a directory for its logs (kept when it fails)
and notes the load average; ``write_result`` stores the figures, with the
machine, that load and the package commit, under ``bench/results/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median (NaN when empty)."""
    return percentile(values, 50)


def achieved_rate(times: Iterable[float], window_s: float) -> float:
    """Calls per second over the span from first to last arrival plus one window.

    Same definition as ``tests/system/test_execution.py::achieved_rate``: a backlog of
    k quota-windows served perfectly (k*Q calls, the last burst starting (k-1)
    windows after the first) scores exactly Q.
    """
    ordered = sorted(times)
    if not ordered:
        return 0.0
    return len(ordered) / (ordered[-1] - ordered[0] + window_s)


# -- one run's environment ---------------------------------------------------------------------------


_LOAD_AT_START: list[float] = []


@contextlib.contextmanager
def workspace(name: str) -> Any:
    """A scratch directory for logs (kept on failure, removed on success); notes the load average."""
    _LOAD_AT_START[:] = [round(x, 2) for x in os.getloadavg()]
    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        yield path
    except BaseException:
        print(f"(logs kept in {path})", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


# -- results ----------------------------------------------------------------------------------------


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def machine() -> dict[str, Any]:
    """Where and on what code the figures were taken."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg_at_start": list(_LOAD_AT_START),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
        status = [*git, "status", "--porcelain", "--", "optimum_bridge"]
        dirty = subprocess.run(status, check=False, capture_output=True)
        info["commit"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        info["commit"] = "unknown"
    return info


def write_result(name: str, record: dict[str, Any], *, stamp: str | None = None) -> Path:
    """``bench/results/<name>-<UTC stamp>.json``; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp or utc_stamp()}.json"
    body = {"benchmark": name, "utc": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **record}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def chart_path(name: str, stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"{name}-{stamp}.png"


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 2) -> str:
    """Print (and return) a fixed-width table."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    return text
