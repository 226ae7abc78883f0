"""The global limiter against a real Redis: the sliding-window property, pauses, waits."""

from __future__ import annotations

import threading

from optimum_bridge.keys import Keys
from optimum_bridge.ratelimit import RateLimiter
from optimum_bridge.settings import RateLimit


def starts(limiter: RateLimiter, client) -> list[float]:
    return [score for _, score in client.zrange(limiter._keys.limiter_log, 0, -1, withscores=True)]


def max_in_any_window(times: list[float], window: float) -> int:
    """Most entries within any half-open window [t, t + window) starting at an entry."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def test_reservations_never_exceed_the_quota_in_any_window(redis_server, prefix):
    client = redis_server.client()
    limiter = RateLimiter(client, Keys(prefix), RateLimit(5, 1.0), margin_s=0.0)
    waits = [limiter.reserve(max_wait_s=60).wait_s for _ in range(23)]
    log = starts(limiter, client)
    assert len(log) == 23
    assert max_in_any_window(log, 1000) == 5
    # First come, first served: each group of five starts one window after the previous one.
    assert waits[4] < 0.05 and 0.95 <= waits[5] <= 1.05 and 3.95 <= waits[22] <= 4.05


def test_concurrent_reservations_from_many_threads(redis_server, prefix):
    client = redis_server.client()
    limiter = RateLimiter(client, Keys(prefix), RateLimit(7, 2.0), margin_s=0.1)
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        for _ in range(5):
            limiter.reserve(max_wait_s=60)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = starts(limiter, client)
    assert len(log) == 40
    assert max_in_any_window(log, 2100) == 7


def test_slot_too_far_is_refused_and_not_recorded(redis_server, prefix):
    client = redis_server.client()
    limiter = RateLimiter(client, Keys(prefix), RateLimit(2, 60.0), margin_s=0.0)
    assert limiter.reserve(max_wait_s=1).granted
    assert limiter.reserve(max_wait_s=1).granted
    refused = limiter.reserve(max_wait_s=1)
    assert not refused.granted and 59 <= refused.wait_s <= 60
    assert len(starts(limiter, client)) == 2


def test_pause_moves_every_new_slot_behind_it(redis_server, prefix):
    client = redis_server.client()
    limiter = RateLimiter(client, Keys(prefix), RateLimit(100, 1.0), margin_s=0.0)
    limiter.pause(5)
    assert 4.9 <= limiter.paused_for() <= 5
    slot = limiter.reserve(max_wait_s=60)
    assert 4.9 <= slot.wait_s <= 5
    # A shorter pause never shortens a longer one.
    limiter.pause(1)
    assert limiter.paused_for() > 4


def test_cancelled_slot_is_given_back(redis_server, prefix):
    client = redis_server.client()
    limiter = RateLimiter(client, Keys(prefix), RateLimit(1, 60.0), margin_s=0.0)
    slot = limiter.reserve(max_wait_s=1)
    limiter.cancel(slot)
    assert limiter.reserve(max_wait_s=1).granted


def test_two_prefixes_have_independent_quotas(redis_server, prefix):
    client = redis_server.client()
    first = RateLimiter(client, Keys(prefix + "a:"), RateLimit(1, 60.0))
    second = RateLimiter(client, Keys(prefix + "b:"), RateLimit(1, 60.0))
    assert first.reserve(max_wait_s=0).granted
    assert second.reserve(max_wait_s=0).granted
    assert not first.reserve(max_wait_s=0).granted
