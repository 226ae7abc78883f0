"""Hypothesis against the running ingress: every input gets a 2xx or a 4xx problem document,
never a 500, and a rejected request never leaves a job behind."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.system.test_ingress import AUTH, ingress, job_keys, local_settings  # noqa: F401 - ingress is a fixture

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
fields = {
    "method": st.sampled_from(["GET", "POST", "delete", "TRACE", ""]) | json_scalars,
    "path": st.sampled_from(["/Vehicles", "//evil/x", "/a/../b", "http://x/y", "/Persons", "/%2e%2e/x"]) | json_scalars,
    "query": st.dictionaries(st.text(max_size=6), json_scalars, max_size=3) | json_values,
    "body": json_values,
    "callback": st.fixed_dictionaries({"url": st.sampled_from(["http://127.0.0.1/x", "https://8.8.8.8/h", "ftp://a"])})
    | json_values,
    "idempotency_key": st.text(max_size=12) | json_scalars,
    "metadata": json_values,
}
# One valid operation with zero or one field replaced by anything: reaches both sides of every check.
near_valid = st.builds(
    lambda mutation: {"method": "GET", "path": "/Vehicles", "idempotency_key": None, **mutation},
    st.just({}) | st.sampled_from(sorted(fields)).flatmap(lambda name: fields[name].map(lambda v: {name: v})),
)
operations = near_valid | st.fixed_dictionaries({}, optional=fields) | json_values
bodies = (
    operations.map(lambda op: json.dumps(op).encode())
    | st.lists(operations, max_size=3).map(lambda ops: json.dumps({"operations": ops}).encode())
    | st.fixed_dictionaries(  # a batch of POST /v1/batches, with its own callback and metadata
        {"operations": st.lists(operations, max_size=3)},
        optional={"callback": fields["callback"], "metadata": fields["metadata"]},
    ).map(lambda batch: json.dumps(batch).encode())
    | st.binary(max_size=64)
)
routes = st.sampled_from(["/v1/operations", "/v1/operations:batch", "/v1/batches"])
content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""])


def test_no_input_crashes_the_ingress_or_leaves_a_rejected_job(redis_server, prefix, ingress):  # noqa: F811
    http = ingress(local_settings(redis_server.url, prefix))  # one server for every example
    redis = redis_server.client()
    seen: dict[int, int] = {}

    @settings(max_examples=300, deadline=None)
    @given(route=routes, body=bodies, content_type=content_types, idempotency=st.none() | st.text(max_size=8))
    def check(route: str, body: bytes, content_type: str, idempotency: str | None) -> None:
        headers = {**AUTH, "content-type": content_type}
        if idempotency is not None and idempotency.isprintable() and idempotency.isascii():
            headers["idempotency-key"] = idempotency
        before = job_keys(redis, prefix)
        response = http.post(route, content=body, headers=headers)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["status"] == response.status_code and problem["title"]
            assert job_keys(redis, prefix) == before

    check()
    print(f"\ningress fuzz: answers by status {dict(sorted(seen.items()))}")
    assert any(200 <= code < 300 for code in seen) and any(400 <= code < 500 for code in seen)
