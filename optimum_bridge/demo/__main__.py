"""``python -m optimum_bridge.demo``: the same as ``optimum-bridge demo``."""

from __future__ import annotations

from optimum_bridge.demo.run import main

raise SystemExit(main())
