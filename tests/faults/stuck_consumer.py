"""``python -m tests.faults.stuck_consumer FLAG worker ARGS``: the bridge's worker, whose consumer stops
asking the broker for messages once the file ``FLAG`` exists.

That is what celery#8030 and its kin look like from outside: the worker is up,
its connection to Redis is fine, and no ``BRPOP`` is ever sent again, so its
queue grows. Here kombu's ``Channel._brpop_start`` returns without sending.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kombu.transport.redis import Channel

from optimum_bridge.cli import main


def stall_once(flag: Path) -> None:
    """From the moment ``flag`` exists, the consumer sends no ``BRPOP``: connected, consuming nothing."""
    start = Channel._brpop_start

    def brpop_start(self: Any, timeout: Any = None) -> None:
        if not flag.exists():
            start(self, timeout)

    Channel._brpop_start = brpop_start


if __name__ == "__main__":
    stall_once(Path(sys.argv[1]))
    raise SystemExit(main(sys.argv[2:]))
