"""``python -m bench [quota|priority|overhead|latency|token|scale|accounts|ui|waste|async|schedules|idle``
``|commands|failover|onboarding|all|profile] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from types import FrameType

BENCHMARKS = {
    "quota": "bench.quota",
    "priority": "bench.priority",
    "overhead": "bench.overhead",
    "latency": "bench.latency",
    "token": "bench.tokens",
    "scale": "bench.scale",
    "accounts": "bench.accounts",
    "ui": "bench.ui",
    "waste": "bench.waste",
    "async": "bench.async_clients",
    "schedules": "bench.schedules",
    "idle": "bench.idle",
    "commands": "bench.commands",
    "failover": "bench.failover",
}
EXTRA = {
    "profile": "bench.profile",  # needs py-spy; not part of "all"
    "onboarding": "bench.onboarding",  # phase 4 of "accounts" (BENCH_ACCOUNTS=onboarding); alone here
}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: everything started is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("benchmark", nargs="?", default="all", choices=[*BENCHMARKS, *EXTRA, "all"])
    parser.add_argument("--quick", action="store_true", help="10/s quota and small counts (a few minutes in all)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    failed = []
    for name in names:
        started = time.monotonic()
        print(f"=== {name}{' (quick)' if args.quick else ''} ===", flush=True)
        try:
            importlib.import_module((BENCHMARKS | EXTRA)[name]).run(quick=args.quick)
        except KeyboardInterrupt:
            print(f"\n{name}: interrupted; everything it started has been stopped", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f}s ===\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
