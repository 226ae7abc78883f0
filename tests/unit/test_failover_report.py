"""What the failover run reports of an operation called twice: enough to tell when, against the kills."""

from __future__ import annotations

from collections import Counter

from optimum_bridge.devstack.failover import FailoverReport, Kill


def test_an_operation_called_twice_is_reported_with_its_calls_and_the_kills() -> None:
    report = FailoverReport(min_replicas=1, operations=2, acknowledged={"op-AA": "j1", "op-BB": "j2"})
    report.kills = [Kill(killed_port=1, at=100.0), Kill(killed_port=2, at=130.0)]
    report.calls = Counter({"/Vehicles/AA": 2, "/Vehicles/BB": 1})
    report.arrivals = {"/Vehicles/AA": [99.5, 104.25], "/Vehicles/BB": [101.0]}
    report.attempts = {"j1": 1, "j2": 1}
    figures = report.figures()
    assert figures["called_twice"] == 1 and figures["extra_calls"] == 1
    assert figures["twice"] == [{"job": "j1", "attempts": 1, "calls_at_s": [-0.5, 4.25], "kills_at_s": [0.0, 30.0]}]


def test_a_run_with_no_operation_called_twice_has_no_details() -> None:
    report = FailoverReport(min_replicas=1, operations=1, acknowledged={"op-AA": "j1"})
    report.calls = Counter({"/Vehicles/AA": 1})
    assert "twice" not in report.figures()
