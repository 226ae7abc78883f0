"""Redis fails over under load (spec §16): one primary, two replicas, three sentinels, real workers.

1,000 distinct operations are submitted through the ingress and ``BridgeClient``
while two workers call the sandbox at a high quota; the primary is SIGKILLed
mid-run and a replica promoted, then (the old primary back as a replica) the
new primary is killed in turn and the old one promoted again
(``devstack.failover``). With ``BRIDGE_REDIS_MIN_REPLICAS=1`` nothing
acknowledged is lost, nothing is called twice, every callback arrives once
(verified with ``standardwebhooks``), and calls resume within 15 s of each
kill. With ``0`` the same run reports what asynchronous replication lost.
"""

from __future__ import annotations

import json

import pytest

from optimum_bridge.devstack import CallbackReceiver, bridge_settings
from optimum_bridge.devstack.failover import run_failover
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import CALLBACK_SECRET

OPERATIONS = 1000
PLATES = generate_fleet(7, OPERATIONS).plates()


def failover_env(url: str, sb, **overrides: str) -> dict[str, str]:
    return bridge_settings(
        url,
        sb,
        prefix="fo:",
        callback_secret=CALLBACK_SECRET,
        OPTIMUM_RATE_LIMIT="200/s",
        BRIDGE_RATE_BURST="20",
        # A running job's lease (half this, 15 s) outlives a failover; a lost message comes back within 30 s.
        BRIDGE_REDELIVERY_TIMEOUT_S="30",
        BRIDGE_RETRY_BASE_S="0.2",
        BRIDGE_CALLBACK_SCHEDULE_S="0.2,0.5,1,2",
        **overrides,
    )


@pytest.mark.parametrize("min_replicas", [1, 0])
def test_a_failover_and_back_loses_nothing_acknowledged(min_replicas, sentinel_group, sandbox, tmp_path, capsys):
    group = sentinel_group()
    sb = sandbox(quota=None, seed=7, fleet_size=OPERATIONS)
    with CallbackReceiver(CALLBACK_SECRET) as receiver:
        env = failover_env(group.url, sb, BRIDGE_REDIS_MIN_REPLICAS=str(min_replicas))
        report = run_failover(
            group, env, tmp_path, sandbox_stats=sb.stats, receiver=receiver, plates=PLATES, operations=OPERATIONS
        )
    figures = report.figures()
    with capsys.disabled():
        print(f"\nfailover, BRIDGE_REDIS_MIN_REPLICAS={min_replicas}: {json.dumps(figures)}")
    assert figures["acknowledged"] == OPERATIONS  # the producers resubmitted until acknowledged
    assert [kill["back_to_first_primary"] for kill in figures["kills"]] == [False, True]
    for kill in figures["kills"]:
        assert kill["first_call_after_s"] is not None and kill["first_call_after_s"] < 15
    if min_replicas == 0:
        return  # asynchronous replication: what it lost is the figure printed above
    assert figures["lost"] == 0 and figures["not_final"] == 0
    assert figures["called_twice"] == 0 and figures["never_called"] == 0
    assert figures["callbacks_missing"] == 0 and figures["callbacks_duplicated"] == 0
