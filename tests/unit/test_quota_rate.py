"""The quota's arithmetic (``quota.rate.Quota``): the pacer's interval is exact, also under a millisecond."""

from __future__ import annotations

import pytest

from optimum_bridge.quota.rate import PACER_SLACK_MS, Quota, RateLimit


def test_the_interval_is_the_window_over_the_limit_not_rounded_to_the_ms() -> None:
    quota = Quota.of(RateLimit.parse("30/m"), margin_s=0.25)
    assert quota.window_ms == 60_250 and quota.interval_ms == pytest.approx(60_250 / 30)
    assert quota.burst_ms == 0  # evenly spaced under a backlog


def test_a_quota_over_1000_a_second_is_not_capped_at_one_call_a_millisecond() -> None:
    quota = Quota.of(RateLimit.parse("5000/s"), margin_s=0.05)
    assert quota.interval_ms == pytest.approx(1050 / 5000)  # 0.21 ms
    # The scripts' clock counts whole milliseconds, and their waits end a little late: credit for that.
    assert quota.burst_ms >= PACER_SLACK_MS - quota.interval_ms


def test_a_slow_quota_stays_evenly_spaced() -> None:
    assert Quota.of(RateLimit.parse("10/s")).burst_ms == 0  # 105 ms apart: no credit needed
    assert Quota.of(RateLimit.parse("200/s")).burst_ms == pytest.approx(1050 / 200)  # 5.25 ms: one


@pytest.mark.parametrize("rate", ["30/m", "10/s", "100000/s", "7/h"])
def test_the_stored_form_reads_back(rate: str) -> None:
    quota = Quota.of(RateLimit.parse(rate))
    assert Quota.of_args(" ".join(str(v) for v in quota.args())) == quota
