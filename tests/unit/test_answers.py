"""The API's answer, read no further than ``BRIDGE_MAX_RESPONSE_BYTES`` (spec §17): fast tier, over
``httpx.MockTransport``; the same through a real worker and the sandbox is in ``faults/test_answers.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from optimum_bridge.errors import FinalError
from optimum_bridge.upstream.client import parse_answer, read_bounded

LIMIT = 64 * 1024


def stream_of(body: bytes, *, declared: bool, chunk: int = 4096) -> httpx.Client:
    """A client whose every answer is ``body``, with or without a content-length, in chunks."""

    read: list[int] = []

    class Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for start in range(0, len(body), chunk):
                read.append(chunk)
                yield body[start : start + chunk]

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(len(body))} if declared else {}
        return httpx.Response(200, headers=headers, stream=Body())

    client = httpx.Client(transport=httpx.MockTransport(handler))
    client.read = read  # type: ignore[attr-defined]  # what the stream gave, for the assertions
    return client


def read(client: httpx.Client) -> bytes:
    with client.stream("GET", "http://api.test/Vehicles") as answer:
        return read_bounded(answer, LIMIT)


@pytest.mark.parametrize("declared", [True, False])
def test_an_answer_at_the_limit_is_read_whole(declared):
    body = json.dumps({"padding": "x" * (LIMIT - 15)}).encode()
    assert len(body) == LIMIT
    assert read(stream_of(body, declared=declared)) == body


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    client = stream_of(b"x" * (LIMIT + 1), declared=True)
    with pytest.raises(FinalError) as caught:
        read(client)
    assert caught.value.kind == "response_too_large"
    assert "BRIDGE_MAX_RESPONSE_BYTES" in caught.value.message
    assert client.read == []  # type: ignore[attr-defined]


def test_a_streamed_answer_stops_at_the_limit():
    client = stream_of(b"x" * (LIMIT * 100), declared=False)
    with pytest.raises(FinalError) as caught:
        read(client)
    assert caught.value.kind == "response_too_large"
    assert len(client.read) * 4096 <= LIMIT + 4096  # type: ignore[attr-defined]  # not one chunk further


def test_a_body_that_is_not_json_is_kept_whole_as_text():
    text = "<html>" + "é" * 100_000 + "</html>"  # far over the 64 KiB text the bridge used to keep
    answer = parse_answer(502, httpx.Headers({"content-type": "text/html"}), text.encode())
    assert answer.body == text
    assert answer.headers == {"content-type": "text/html"}


def test_a_json_body_is_parsed_and_an_empty_one_is_none():
    assert parse_answer(200, httpx.Headers(), b'{"a": [1]}').body == {"a": [1]}
    assert parse_answer(204, httpx.Headers(), b"").body is None
