"""Rate-limit headers as one answer states them (spec §13): both IETF drafts' forms, X-RateLimit-*, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimum_bridge.quota.headers import Statement, parse_rate_headers
from optimum_bridge.sandbox.app import rate_limit_headers
from optimum_bridge.sandbox.state import QuotaDecision

NOW = 1_800_000_000.0  # epoch seconds (2027)

CASES = [
    # the IETF draft, combined form (drafts 03-06)
    (
        {"RateLimit-Policy": "30;w=60", "RateLimit": "limit=30, remaining=5, reset=40"},
        Statement("ietf", 30, 60.0, 5, 40.0),
    ),
    # the newer draft (07+): named policies, q/w and r/t parameters
    (
        {"RateLimit-Policy": '"default";q=30;w=60', "RateLimit": '"default";r=5;t=40'},
        Statement("ietf", 30, 60.0, 5, 40.0),
    ),
    # several policies: the most restrictive rate wins; several items: the smallest remaining
    (
        {"RateLimit-Policy": '"burst";q=10;w=1, "day";q=1000;w=86400', "RateLimit": '"burst";r=7;t=1, "day";r=2;t=500'},
        Statement("ietf", 1000, 86400.0, 2, 500.0),
    ),
    # the draft's first form: separate fields, no window
    (
        {"RateLimit-Limit": "20", "RateLimit-Remaining": "0", "RateLimit-Reset": "12"},
        Statement("ietf", 20, None, 0, 12.0),
    ),
    # a policy alone states the quota, nothing remaining
    ({"ratelimit-policy": "20;w=60"}, Statement("ietf", 20, 60.0, None, None)),
    # X-RateLimit-*, reset as seconds from now
    (
        {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "17"},
        Statement("x", 20, None, 3, 17.0),
    ),
    # ... as an epoch time in seconds, and in milliseconds
    ({"X-RateLimit-Limit": "20", "X-RateLimit-Reset": str(int(NOW) + 30)}, Statement("x", 20, None, None, 30.0)),
    (
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW * 1000) + 5000)},
        Statement("x", None, None, 0, 5.0),
    ),
    # an epoch in the past is "now", never negative
    ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 100)}, Statement("x", None, None, 0, 0.0)),
    # repeated values (some proxies fold a header twice) take the first
    ({"X-RateLimit-Limit": "20, 20"}, Statement("x", 20, None, None, None)),
    # garbage is ignored field by field
    ({"X-RateLimit-Limit": "lots", "X-RateLimit-Remaining": "4"}, Statement("x", None, None, 4, None)),
    ({"X-RateLimit-Limit": "-5"}, None),
    ({"X-RateLimit-Limit": "99999999999999"}, None),
    ({"RateLimit-Policy": '"default";w=60'}, None),
    ({"RateLimit-Policy": "30;w=0", "RateLimit": "garbage"}, None),
    ({"Content-Type": "application/json"}, None),
    ({}, None),
]


@pytest.mark.parametrize(("headers", "expected"), CASES)
def test_each_form_is_read(headers: dict[str, str], expected: Statement | None) -> None:
    assert parse_rate_headers(headers, now=NOW) == expected


def test_ietf_is_read_before_x_style_when_both_are_sent() -> None:
    headers = {"RateLimit-Policy": "10;w=60", "RateLimit": "limit=10, remaining=1, reset=3", "X-RateLimit-Limit": "99"}
    statement = parse_rate_headers(headers, now=NOW)
    assert statement is not None and statement.style == "ietf" and statement.limit == 10


def test_a_used_up_statement_explains_a_429() -> None:
    assert Statement("x", 20, None, 0, 3.0).used_up
    assert not Statement("x", 20, None, 2, 3.0).used_up
    assert not Statement("x", 20).used_up


def test_describe_says_what_was_stated() -> None:
    assert Statement("x", 20, None, 3, 17.0).describe() == "X-RateLimit-Limit 20, remaining 3, reset in 17s"
    assert Statement("ietf", 30, 60.0).describe() == "RateLimit limit 30 per 60s"


@pytest.mark.parametrize("style", ["ietf", "x"])
@given(
    limit=st.integers(1, 10_000),
    window=st.sampled_from([1.0, 60.0, 3600.0]),
    remaining=st.integers(0, 10_000),
    reset=st.integers(1, 3600),
)
def test_what_the_sandbox_states_is_read_back(
    style: str, limit: int, window: float, remaining: int, reset: int
) -> None:
    decision = QuotaDecision(True, 0, limit, window, min(remaining, limit), reset)
    statement = parse_rate_headers(rate_limit_headers(style, decision), now=NOW)  # type: ignore[arg-type]
    assert statement is not None
    assert (statement.limit, statement.remaining, statement.reset_s) == (limit, min(remaining, limit), reset)
    assert statement.window_s == (window if style == "ietf" else None)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "RateLimit",
                "RateLimit-Policy",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "RateLimit-Reset",
            ]
        ),
        st.text(max_size=40),
    )
)
def test_no_header_value_makes_the_parser_raise(headers: dict[str, str]) -> None:
    statement = parse_rate_headers(headers, now=NOW)
    if statement is not None:
        assert statement.limit is None or statement.limit >= 0
        assert statement.remaining is None or statement.remaining >= 0
        assert statement.reset_s is None or statement.reset_s >= 0


def test_no_headers_for_none_or_an_unlimited_client() -> None:
    assert rate_limit_headers("none", QuotaDecision(True, 0, 30, 60.0, 29, 60)) == {}
    assert rate_limit_headers("x", QuotaDecision(True)) == {}
