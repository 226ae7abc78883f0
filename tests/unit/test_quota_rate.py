"""The quota's arithmetic (``quota.rate.Quota``): the pacer's interval is exact, also under a millisecond."""

from __future__ import annotations

import pytest

from optimum_bridge.quota.rate import Quota, RateLimit


def test_the_interval_is_the_window_over_the_limit_not_rounded_to_the_ms() -> None:
    quota = Quota.of(RateLimit.parse("30/m"), margin_s=0.25)
    assert quota.window_ms == 60_250 and quota.interval_ms == pytest.approx(60_250 / 30)
    assert quota.burst_ms == 0  # evenly spaced under a backlog


def test_a_quota_over_1000_a_second_is_not_capped_at_one_call_a_millisecond() -> None:
    quota = Quota.of(RateLimit.parse("5000/s"), margin_s=0.05)
    assert quota.interval_ms == pytest.approx(1050 / 5000)  # 0.21 ms
    # The scripts' clock counts whole milliseconds: a millisecond's share may start in one.
    assert quota.burst_ms >= 1.0 - quota.interval_ms


@pytest.mark.parametrize("rate", ["30/m", "10/s", "100000/s", "7/h"])
def test_the_stored_form_reads_back(rate: str) -> None:
    quota = Quota.of(RateLimit.parse(rate))
    assert Quota.of_args(" ".join(str(v) for v in quota.args())) == quota
