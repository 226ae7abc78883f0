"""A producer in its own process, driven over stdin/stdout, for whichever ``optimum_bridge`` is on its path.

``python -m bench.submitter`` builds a ``BridgeClient`` from the ``BRIDGE_*``
and ``OPTIMUM_*`` variables it is given, then answers one JSON request per
line with one JSON line:

- ``{"submit": [op, ...]}`` -> ``{"ids": [...], "wall": t, "mono": t}``: the
  clocks are read just before ``submit_many``, so they are the submission time;
- ``{"get": [id, ...]}`` -> ``{"jobs": {id: {status, submitted_at, started_at,
  position, estimated_start_at}}}`` (``null`` where the design has no such
  field: the old one has neither ``started_at`` nor a forecast);
- ``{"where": true}`` -> ``{"package": <path of the optimum_bridge imported>}``.

It uses only the producer API that the pre-scheduler design (commit
``8dbc670``) and the scheduler share, so ``bench.priority`` runs the same
producer code against both: with ``PYTHONPATH=<extracted 8dbc670>:<this tree>``
it is the old package's ``BridgeClient`` that submits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import optimum_bridge
from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _job(client: BridgeClient, job_id: str) -> dict[str, Any]:
    status = client.get(job_id)
    return {
        "status": status.status,
        "submitted_at": _iso(status.submitted_at),
        "started_at": _iso(getattr(status, "started_at", None)),  # the old design has none
        "position": getattr(status, "position", None),
        "estimated_start_at": _iso(getattr(status, "estimated_start_at", None)),
    }


def answer(client: BridgeClient, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request line."""
    if "submit" in request:
        wall, mono = time.time(), time.monotonic()
        ids = client.submit_many(request["submit"])
        return {"ids": ids, "wall": wall, "mono": mono}
    if "get" in request:
        return {"jobs": {job_id: _job(client, job_id) for job_id in request["get"]}}
    if "where" in request:
        return {"package": str(optimum_bridge.__file__)}
    raise ValueError(f"unknown request: {sorted(request)}")


def main() -> int:
    client = BridgeClient(settings_from(os.environ))
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = answer(client, json.loads(line))
        except Exception as exc:  # the bench shows it; the driver keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
