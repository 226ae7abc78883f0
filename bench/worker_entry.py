"""Entry point of every worker process a benchmark starts.

``python -m bench.worker_entry --kind bridge --ready-file F -- <celery worker args>``
runs exactly ``python -m optimum_bridge.cli worker <args>`` (kind ``bridge``),
the same with the latency timers of ``bench.instrument`` installed (kind
``instrumented``), or the plain-Celery baseline (kind ``plain``). Additions:
a ``worker_ready`` handler that writes ``F``, so the bench knows when a
worker consumes without depending on the log level; and ``--pool`` is made to
win over the bridge app's ``worker_pool`` setting (see ``main``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from celery.signals import worker_ready


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_entry")
    parser.add_argument("--kind", choices=["bridge", "plain", "instrumented"], required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("worker_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    extra = [a for a in args.worker_args if a != "--"]
    pool = extra[extra.index("--pool") + 1] if "--pool" in extra else None  # start_workers passes "--pool X"
    if pool == "gevent":
        from celery import maybe_patch_concurrency  # before the bridge opens a socket, as `celery` does

        maybe_patch_concurrency(["--pool", pool])  # then `optimum-bridge worker` runs in this process

    def ready(**_: Any) -> None:
        package = getattr(sys.modules.get("optimum_bridge"), "__file__", "")  # which tree runs (bench.priority)
        args.ready_file.write_text(f"{os.getpid()} {package}")

    worker_ready.connect(ready, weak=False)
    if args.kind == "plain":
        from bench.plain_celery import PLAIN_QUEUE, worker_app

        worker_app().worker_main(["worker", "-Q", PLAIN_QUEUE, *extra])
        return 0
    if args.kind == "instrumented":
        from bench.instrument import install

        install()
    if pool is not None and pool != "gevent":
        # Belt and braces from when optimum_bridge.worker set worker_pool="threads" (Celery's CLI let
        # that conf win over an explicit "--pool prefork"): the conf names the pool asked for.
        from optimum_bridge.worker import app

        app.conf.worker_pool = pool
    from optimum_bridge.cli import main as bridge_main

    return bridge_main(["worker", *extra])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
