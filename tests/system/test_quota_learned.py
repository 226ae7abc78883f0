"""The quota as the API states it (spec §13), against a real Redis and the real sandbox.

The limiter follows rate-limit headers (capped by the configured quota, never trusted beyond
the next statement), learns a lower limit from 429s no header explains (AIMD, in Lua, shared
by every process), and shows it all through ``optimum-bridge quota``. End to end, with real
workers against a sandbox whose quota is below the configured one, the 429s stop after the
first window or two; with headers, after the first answers.
"""

from __future__ import annotations

import re

import pytest
import redis

from optimum_bridge import BridgeClient
from optimum_bridge.keys import Keys
from optimum_bridge.quota.headers import Statement
from optimum_bridge.quota.limiter import HOLD_WINDOWS, RateLimiter
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.schemas import Operation
from tests.support import bridge_env, run_cli, settings_from, wait_finished


@pytest.fixture
def limiter(redis_server, prefix):
    """Factory: a limiter of the test's own prefix (``10/m`` with no margin: a window of ``W`` ms).

    A minute, so that a loaded machine's stalls between two steps of a test never move it to
    another window; tests move time on by rewriting the learned moments (``shift_back``).
    """

    def build(rate: str = "10/m", *, burst: int = 10, margin_s: float = 0.0) -> RateLimiter:
        return RateLimiter(redis_server.client(), Keys(prefix), RateLimit.parse(rate), margin_s=margin_s, burst=burst)

    return build


W = 60_000  # the window of ``limiter()``, ms


def shift_back(client: redis.Redis, limiter: RateLimiter, field: str, ms: int) -> None:
    """Move a learned moment ``ms`` into the past: time passing, without sleeping through windows."""
    client.hincrby(limiter.state_key, field, -ms)


# -- headers ----------------------------------------------------------------------------------


def test_a_stated_limit_is_followed_and_capped_by_the_configured_one(limiter):
    lim = limiter("30/m", burst=1, margin_s=0.25)
    assert lim.observe(Statement("x", 20)) == 20
    state = lim.state()
    assert (state.configured, state.limit) == (30, 20)
    assert state.interval_s == pytest.approx(60.25 / 20, abs=0.002)
    assert state.why == "headers: X-RateLimit-Limit 20"
    assert lim.observe(Statement("ietf", 500, 60.0)) == 30  # more than configured: the ceiling holds
    assert lim.state().learned_text == "—"
    assert "capped at the configured limit" in lim.state().learned["h_reason"]
    assert lim.observe(Statement("ietf", 1000, 3600.0)) == 16  # 1000/h is 16.7/min: 16 per minute
    assert lim.state().why == "headers: RateLimit limit 1000 per 3600s = 16 per 60s"
    assert lim.observe(Statement("ietf", 0, 60.0)) == 1  # never below one call per window


def test_each_statement_replaces_the_last_and_none_outlives_its_validity(limiter, redis_server):
    lim = limiter("30/m", burst=1)
    lim.observe(Statement("x", 10))
    assert lim.observe(Statement("x", 25)) == 25  # the newer answer speaks, not the lowest one
    shift_back(redis_server.client(), lim, "h_until", 121_000)  # two windows passed with no restatement
    assert lim.state().limit == 30
    pttl = redis_server.client().pttl(lim.learned_key)
    assert 0 < pttl <= 2 * 60_000 + 60_000  # the previous version's hash goes away by itself


def test_nothing_remaining_holds_every_slot_until_the_reset(limiter, redis_server):
    lim = limiter()
    lim.observe(Statement("x", 10, None, 2, 5.0))  # the API counted 8 calls the log never saw (another user)
    assert lim.take_slot() == 0 and lim.take_slot() == 0  # two remain
    wait = lim.take_slot()
    assert 3 < wait <= 5  # the third would be a certain 429
    lim.observe(Statement("x", 10, None, 0, 8.0))
    assert 6 < lim.state().held_s <= 8
    lim.observe(Statement("x", 10, None, 5, 8.0))  # a later answer says calls remain again
    assert lim.take_slot() == 0


def test_when_the_log_agrees_nothing_remains_its_wall_beats_a_whole_second_reset(limiter, redis_server):
    lim, client = limiter(), redis_server.client()
    lim.observe(Statement("x", 2))
    seconds, micros = client.time()
    now = seconds * 1000 + micros // 1000
    client.zadd(lim.log_key, {"a": now - 30_000, "b": now - 20_000})  # two calls 30 and 20 s ago: the log is full
    lim.observe(Statement("x", 2, None, 0, 59.0))  # "nothing remains, reset in 59 s"
    assert 25 < lim.take_slot() <= 30  # the oldest call leaves the window in 30 s: that, not 59


def test_a_stated_reset_is_capped_to_the_window(limiter):
    lim = limiter()
    lim.observe(Statement("x", 10, None, 0, 86_400.0))
    assert 0 < lim.state().held_s <= 60


def test_retry_after_takes_precedence_over_a_stated_reset(limiter):
    lim = limiter()
    lim.observe(Statement("x", 10, None, 0, 30.0), retry_after=True)
    assert lim.take_slot() == 0  # the pause of Retry-After is the caller's; the reset is not applied


# -- 429s no header explains: AIMD --------------------------------------------------------------


def next_window(client: redis.Redis, lim: RateLimiter) -> None:
    """The calls of the past window (and the pacer's debt) are gone, as a window later."""
    client.delete(lim.log_key)
    client.hdel(lim.state_key, "tat")


def take(lim: RateLimiter, n: int) -> None:
    for _ in range(n):
        assert lim.take_slot() == 0


def test_an_unexplained_429_lowers_the_limit_to_what_the_api_allowed(limiter):
    lim = limiter()
    take(lim, 7)
    assert lim.learn_from_429("no rate-limit header") == 6  # the 7th was refused: 6 went through
    state = lim.state()
    assert state.limit == 6 and state.interval_s == pytest.approx(60 / 6, abs=0.002)
    assert state.why == "429 at 7 calls in the window (configured 10), no rate-limit header"
    assert lim.learn_from_429("no rate-limit header") == 6  # the same burst: one lesson


def test_the_learned_limit_grows_back_one_per_window_after_the_hold(limiter, redis_server):
    lim, client = limiter(), redis_server.client()
    take(lim, 5)
    assert lim.learn_from_429("no rate-limit header") == 4
    shift_back(client, lim, "a_since", HOLD_WINDOWS * W)
    assert lim.state().limit == 4  # still held
    shift_back(client, lim, "a_since", 3 * W)
    assert lim.state().limit == 7  # three clean windows: +3
    shift_back(client, lim, "a_since", 10 * W)
    assert lim.state().limit == 10 and lim.state().learned_text == "—"  # back to the configured limit


def test_a_429_that_comes_back_before_the_limit_doubles_the_hold(limiter, redis_server):
    lim, client = limiter(), redis_server.client()
    take(lim, 5)
    lim.learn_from_429("no rate-limit header")
    assert client.hget(lim.state_key, "a_hold") == str(HOLD_WINDOWS).encode()
    shift_back(client, lim, "a_since", (HOLD_WINDOWS + 1) * W)  # grown to 5: probing
    assert lim.state().limit == 5
    next_window(client, lim)
    take(lim, 5)
    assert lim.learn_from_429("no rate-limit header") == 4
    assert client.hget(lim.state_key, "a_hold") == str(2 * HOLD_WINDOWS).encode()


def test_a_one_off_429_is_forgotten(limiter, redis_server):
    lim, client = limiter(), redis_server.client()
    take(lim, 9)
    lim.learn_from_429("no rate-limit header")
    pttl = client.pttl(lim.learned_key)
    assert (HOLD_WINDOWS + 2) * W < pttl <= (HOLD_WINDOWS + 3) * W  # back at 10, then the key goes
    shift_back(client, lim, "a_since", 60 * W)
    take(lim, 1)
    next_window(client, lim)
    take(lim, 9)
    lim.learn_from_429("no rate-limit header")
    assert client.hget(lim.state_key, "a_hold") == str(HOLD_WINDOWS).encode()  # a new episode, not a repeat


def test_headers_and_429s_combine_the_lower_wins(limiter):
    lim = limiter()
    lim.observe(Statement("x", 8))
    take(lim, 4)
    assert lim.learn_from_429("headers said X-RateLimit-Limit 8, remaining 3") == 3
    assert lim.state().limit == 3 and "headers said" in lim.state().why


# -- the client: every answer's headers, 429s, Retry-After (the sandbox's scripted answers) -----


@pytest.fixture
def api(redis_server, prefix, sandbox, runtime):
    """Factory: an in-process runtime's API client for a sandbox with ``knobs``, and the sandbox."""

    def build(**knobs):
        sb = sandbox(**knobs)
        env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/m", BRIDGE_RATE_BURST="10")
        rt = runtime(settings_from(env))
        return rt.accounts["default"].api, rt.accounts["default"].limiter, sb

    return build


VEHICLES = Operation(method="GET", path="/Vehicles")


def test_every_answer_s_headers_reach_the_limiter(api):
    client, lim, _ = api(quota="4/s", rate_limit_headers="x")
    assert client.send(VEHICLES, client.token()).response.status_code == 200
    assert lim.state().limit == 4 and lim.state().why == "headers: X-RateLimit-Limit 4"


def test_an_unexplained_429_pauses_and_teaches(api):
    client, lim, sb = api(quota=None)
    sb.add_faults(path="/Vehicles", responses=[{"status": 429}])
    take(lim, 3)
    assert client.send(VEHICLES, client.token()).response.status_code == 429
    state = lim.state()
    assert state.limit == 2 and 55 < state.paused_s <= 60  # no Retry-After: the quota's window
    assert state.why.endswith("no rate-limit header")


def test_a_429_the_headers_explain_pauses_until_their_reset_and_teaches_nothing(api):
    client, lim, sb = api(quota=None)
    headers = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "30"}
    sb.add_faults(path="/Vehicles", responses=[{"status": 429, "headers": headers}])
    assert client.send(VEHICLES, client.token()).response.status_code == 429
    state = lim.state()
    assert 25 < state.paused_s <= 30 and state.limit == 10 and "a_limit" not in state.learned


def test_retry_after_beats_the_stated_reset_on_a_429(api):
    client, lim, sb = api(quota=None)
    headers = {"Retry-After": "30", "RateLimit-Policy": "10;w=60", "RateLimit": "limit=10, remaining=0, reset=50"}
    sb.add_faults(path="/Vehicles", responses=[{"status": 429, "headers": headers}])
    assert client.send(VEHICLES, client.token()).retry_after_s == 30
    assert 25 < lim.state().paused_s <= 30


def test_an_absurd_retry_after_is_capped(api):
    client, lim, sb = api(quota=None)
    sb.add_faults(path="/Vehicles", responses=[{"status": 429, "headers": {"Retry-After": "1800000000"}}])
    attempt = client.send(VEHICLES, client.token())
    assert attempt.retry_after_s == 3600, "the job's retry waits no longer than the account's pause: one cap"
    assert 3500 < lim.state().paused_s <= 3600


def test_learning_off_keeps_the_configured_limit(redis_server, prefix, sandbox, runtime):
    sb = sandbox(quota="4/s", rate_limit_headers="x")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/s", BRIDGE_LEARN_QUOTA="false")
    acct = runtime(settings_from(env)).accounts["default"]
    acct.api.send(VEHICLES, acct.api.token())
    assert acct.limiter.state().limit == 10 and acct.limiter.state().learned == {}


# -- the CLI ------------------------------------------------------------------------------------


def test_quota_command_prints_configured_learned_why_calls_and_pause(redis_server, prefix, sandbox):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/m")  # a minute: the CLI's start is no race
    lim = RateLimiter(redis_server.client(), Keys(prefix), RateLimit.parse("10/m"), margin_s=0.25, burst=10)
    take(lim, 4)
    lim.learn_from_429("no rate-limit header")
    lim.pause(30)
    out = run_cli(env, "quota")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("default\n") and "configured  10/m" in text
    assert "learned     3/m since " in text and "429 at 4 calls in the window (configured 10)" in text
    assert "back to 10/m by " in text
    assert "in window   4 calls (limit in force 3, one slot every 20.08 s)" in text
    paused = re.search(r"paused      until \S+ \S+ UTC \((\d+\.\d) s\)", text)
    assert paused and 0 < float(paused.group(1)) <= 30, text


def test_quota_command_says_nothing_is_learned(redis_server, prefix, sandbox):
    env = bridge_env(redis_server.url, prefix, sandbox(quota=None))
    out = run_cli(env, "quota")
    assert out.returncode == 0, out.stderr
    assert "learned     — (the configured limit holds)" in out.stdout and "paused      no" in out.stdout


# -- end to end: real workers against a sandbox below the configured quota ----------------------


def rejected_after(log: list[dict], start: float, window: float, first: float, until: float) -> list[float]:
    """Arrival times (in windows since ``start``) of the 429s between ``first`` and ``until`` windows."""
    times = [(e["t"] - start) / window for e in log if e["status"] == 429]
    return [t for t in times if first <= t < until]


def run_backlog(redis_server, prefix, sandbox, workers, n: int, **knobs) -> dict:
    sb = sandbox(quota="4/s", **knobs)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/s", BRIDGE_MAX_ATTEMPTS="20")
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    # Each makes its own call (coalesce: False): identical reads would otherwise share one (spec 13).
    ids = client.submit_many([{"method": "GET", "path": "/Vehicles", "coalesce": False} for _ in range(n)])
    wait_finished(client, ids, timeout=120)
    assert all(client.get(i).status == "succeeded" for i in ids)
    stats = sb.stats()
    assert sum(e["path"] == "/Vehicles" and e["status"] == 200 for e in stats["log"]) == n
    return stats


def test_without_headers_the_429s_stop_after_the_first_windows(redis_server, prefix, sandbox, workers):
    stats = run_backlog(redis_server, prefix, sandbox, workers, 30)
    log = sorted((e for e in stats["log"] if e["path"] == "/Vehicles"), key=lambda e: e["t"])
    rejected = [e["t"] for e in log if e["status"] == 429]
    print(f"\nsandbox 4/s, configured 10/s, no headers: {len(rejected)} 429s of {len(log)} calls")
    assert rejected, "the bridge never met the lower quota: the test proves nothing"
    # the first 429 teaches; from two windows after it until the first possible probe, none
    window = Quota.of(RateLimit.parse("10/s")).window_ms / 1000  # the configured window with its (default) margin
    quiet = rejected_after(log, rejected[0], window, 2, HOLD_WINDOWS + 1)
    assert quiet == [], f"429s kept coming after the lesson: {quiet}"
    assert len(rejected) <= 5


@pytest.mark.parametrize("style", ["x", "ietf"])
def test_with_headers_there_is_no_429_after_the_first_answers(redis_server, prefix, sandbox, workers, style):
    stats = run_backlog(redis_server, prefix, sandbox, workers, 20, rate_limit_headers=style)
    log = sorted((e for e in stats["log"] if e["path"] == "/Vehicles"), key=lambda e: e["t"])
    statuses = [e["status"] for e in log]
    print(f"\nsandbox 4/s stated in {style} headers, configured 10/s: statuses {statuses}")
    assert 429 not in statuses[4:], statuses  # the first answers teach the quota; nothing after is refused


def test_the_learned_fields_live_in_the_state_without_a_ttl_and_a_new_lesson_drops_the_stale_ones(
    limiter, redis_server
):
    """Issue 17: the state (read in one HMGET per slot) has no TTL; an expired statement is harmless until
    the next lesson forgets it, as the previous version's hash forgot it by its TTL."""
    lim, client = limiter(), redis_server.client()
    take(lim, 5)
    lim.observe(Statement("x", 8))
    assert lim.learn_from_429("no rate-limit header") == 4
    assert client.pttl(lim.state_key) == -1 and client.pttl(lim.learned_key) > 0
    learned = lim.state().learned
    assert {"h_limit", "a_limit"} <= set(learned) and not {"tat", "quota", "pause", "look_delayed"} & set(learned)
    shift_back(client, lim, "h_until", 3 * W)  # the statement expired two windows ago: ignored already
    assert lim.state().limit == 4 and lim.state().learned_from_429s
    lim.learn_from_429("no rate-limit header")  # a new lesson: the expired statement goes
    assert client.hget(lim.state_key, "h_limit") is None and client.hget(lim.state_key, "a_limit") is not None
