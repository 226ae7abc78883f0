"""``python -m optimum_bridge.cli``: the same as ``optimum-bridge``."""

from __future__ import annotations

from optimum_bridge.cli import main

raise SystemExit(main())
