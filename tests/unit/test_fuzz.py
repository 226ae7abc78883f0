"""Hypothesis against the operation schema: every input is either a valid operation or a
one-line error naming a field, and no accepted path can move the token to another host."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from optimum_bridge.schemas import Operation, first_error

BASE = "https://apicore-preprod.optimum-automotive.com"
PATH_ALPHABET = st.sampled_from(
    [*list("/.%2eE:@\\?#ab-_~ \t\r\n\x00"), "..", "//", "%2e", "%2f", "%5c", "http:", "@evil"]
)
paths = st.lists(PATH_ALPHABET, max_size=12).map("".join) | st.text(max_size=40)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
raw_operations = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["GET", "get", "POST", "TRACE", "", "PATCH", "CONNECT"])
        | st.text(max_size=6)
        | st.integers(),
        "path": paths | st.integers() | st.none(),
        "query": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "body": json_values,
        "callback": st.fixed_dictionaries(
            {"url": st.text(max_size=30) | st.sampled_from(["http://127.0.0.1/x", "ftp://x", "https://u:p@h/"])}
        )
        | json_values,
        "idempotency_key": st.text(max_size=30) | json_values,
        "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "surprise": json_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_operations)
def test_any_input_is_an_operation_or_a_one_line_error_naming_a_field(raw):
    try:
        operation = Operation.model_validate(raw)
    except ValidationError as exc:
        line = first_error(exc)
        assert "\n" not in line
        field = line.split(":", 1)[0].split(".", 1)[0]
        assert field in {"method", "path", "query", "body", "callback", "idempotency_key", "metadata", "surprise"}
        return
    assert Operation.model_validate_json(operation.model_dump_json()) == operation


@settings(max_examples=2000, deadline=None)
@given(paths)
def test_an_accepted_path_never_leaves_the_api_host(path):
    try:
        operation = Operation(method="GET", path=path)
    except ValidationError:
        return
    url = httpx.URL(BASE + operation.path)
    assert url.scheme == "https" and url.host == "apicore-preprod.optimum-automotive.com" and url.port is None
    assert ".." not in url.path.split("/")
