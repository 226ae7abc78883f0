"""HTTP to Optimum's API: one attempt of an operation, with the shared token, inside the shared quota.

One attempt of an operation whose slot the scheduler gave is two calls down
from the executor: ``token()`` (the shared token, before anything leaves) and
``send(operation, token)``: the request (redirects never followed, so the
bearer token cannot leave the API host) and the one-time refresh on 401, whose
re-send takes a second slot. Between the two the executor records that the
call is sent. ``send`` returns an ``Attempt`` (the answer, and its Retry-After
capped here, once) and raises ``NetworkError`` when there is no answer;
deciding what the answer means is the executor's job.

The answer is read as a stream and no further than ``max_response_bytes``
(``BRIDGE_MAX_RESPONSE_BYTES``): a longer one is a ``FinalError``
``response_too_large``, never a truncated body stored as a success, and a
worker's memory stays bounded whatever the API sends. A body that is not JSON
is kept whole, as text.

Every answer's rate-limit headers (``quota.headers``) go to the limiter, which
follows them (``RateLimiter.observe``). A 429 pauses the account for its
``Retry-After`` (which takes precedence), else until the reset its headers
state when they say nothing remains, else for the window; a 429 that no
header explains teaches the limiter a lower limit (``learn_from_429``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import Deferred, FinalError, NetworkError
from optimum_bridge.jobs.retry import retry_after
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.quota.headers import Statement, parse_rate_headers
from optimum_bridge.quota.limiter import RateLimiter
from optimum_bridge.quota.rate import Quota
from optimum_bridge.schemas import ApiResponse, Operation
from optimum_bridge.upstream.tokens import Token, TokenStore

log = logging.getLogger(__name__)

KEPT_HEADERS = ("content-type", "retry-after", "location", "etag", "last-modified", "x-total-count", "link")
#: ``BRIDGE_MAX_RESPONSE_BYTES``'s default: the longest answer read.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: The longest pause a 429's Retry-After may impose (or two windows, when the quota's is longer).
MAX_PAUSE_S = 3600.0
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def parse_answer(status_code: int, headers: httpx.Headers, content: bytes) -> ApiResponse:
    """A whole answer as an ``ApiResponse``: the JSON body when it is JSON, else the text."""
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    body: object = None
    if content:
        try:
            body = json.loads(content)
        except ValueError:
            body = content.decode("utf-8", "replace")
    return ApiResponse.model_validate({"status_code": status_code, "headers": kept, "body": body})


def too_large(status_code: int, limit: int) -> FinalError:
    """The final error of an answer longer than ``limit`` bytes."""
    return FinalError(
        "response_too_large",
        f"the API answered {status_code} with a body over BRIDGE_MAX_RESPONSE_BYTES ({limit} bytes): not kept",
    )


def read_bounded(answer: httpx.Response, limit: int) -> bytes:
    """The body of a streamed answer, read no further than ``limit`` bytes (``response_too_large`` beyond)."""
    declared = answer.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(answer.status_code, limit)
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_bytes():  # decoded: a compressed answer is measured by what it inflates to
        size += len(chunk)
        if size > limit:
            raise too_large(answer.status_code, limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Attempt:
    """What one attempt's call gave: the API's answer, and how long it asked to wait before the next call."""

    response: ApiResponse
    #: The answer's ``Retry-After``, never longer than the account's longest pause (None: it gave none).
    retry_after_s: float | None = None
    #: The call's metrics (``Metrics.call_counts``), for the script that finishes or parks the job to add.
    counts: tuple[str, ...] = ()


class OptimumClient:
    """Sends operations to the API with the shared token, inside the shared quota."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        api_url: str,
        tokens: TokenStore,
        limiter: RateLimiter,
        metrics: Metrics,
        max_wait_s: float,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._http = http
        self._max_response_bytes = max_response_bytes
        self._base = api_url.rstrip("/")
        self._tokens = tokens
        self._limiter = limiter
        self._metrics = metrics
        self._max_wait_s = max_wait_s
        self._clock = clock

    @property
    def quota(self) -> Quota:
        """The quota of the account this client calls for."""
        return self._limiter.quota

    @property
    def longest_pause_s(self) -> float:
        """The most a ``Retry-After`` is obeyed, by the account's pause and by the job's retry alike."""
        return max(MAX_PAUSE_S, 2 * self._limiter.rate.window_s)

    def token(self) -> Token:
        """The shared token for the next call (fetched under the lock when needed); nothing has left yet."""
        return self._tokens.get()

    def cached_token(self) -> Token | None:
        """The token this process holds, if it needs no Redis read or refresh (``TokenStore.peek``)."""
        return self._tokens.peek()

    def send(self, operation: Operation, token: Token) -> Attempt:
        """The call, sent at once; on a 401, one new token and one re-send in a slot of its own."""
        answer = self._send(operation, token)
        if answer.response.status_code == 401:
            self._metrics.add(answer.counts)
            self._tokens.invalidate(token)
            token = self._tokens.get()
            if not self._limiter.wait_for_slot(max_wait_s=self._max_wait_s):
                raise Deferred(self._limiter.quota.interval_s)
            answer = self._send(operation, token)
        return answer

    def _send(self, operation: Operation, token: Token) -> Attempt:
        started = self._clock.monotonic()
        request = self._http.build_request(
            operation.method,
            self._base + operation.path,
            params=operation.query or None,
            json=operation.body if operation.method != "GET" else None,
            headers={"Authorization": f"Bearer {token.value.get_secret_value()}", "Accept": "application/json"},
        )
        try:
            answer = self._http.send(request, stream=True, follow_redirects=False)
        except _NOT_SENT as exc:
            self._metrics.observe_call("error", self._clock.monotonic() - started)
            raise NetworkError("connect", f"could not reach the API: {type(exc).__name__}", maybe_sent=False) from None
        except httpx.HTTPError as exc:
            raise self._failed(exc, started) from None
        try:
            wait = self._observe(answer)
            content = read_bounded(answer, self._max_response_bytes)
        except httpx.HTTPError as exc:
            raise self._failed(exc, started) from None
        except FinalError:  # too large: an answer all the same, counted as one
            self._metrics.observe_call(answer.status_code, self._clock.monotonic() - started)
            raise
        finally:
            answer.close()
        counts = self._metrics.call_counts(answer.status_code, self._clock.monotonic() - started)
        return Attempt(parse_answer(answer.status_code, answer.headers, content), wait, counts)

    def _failed(self, exc: httpx.HTTPError, started: float) -> NetworkError:
        """The error of a request that may have reached the API and got no (whole) answer."""
        if isinstance(exc, httpx.TimeoutException):
            self._metrics.observe_call("timeout", self._clock.monotonic() - started)
            return NetworkError("timeout", f"the API did not answer in time: {type(exc).__name__}", maybe_sent=True)
        self._metrics.observe_call("error", self._clock.monotonic() - started)
        return NetworkError("network", f"the connection to the API failed: {type(exc).__name__}", maybe_sent=True)

    def _observe(self, answer: httpx.Response) -> float | None:
        """Follow the quota an answer's headers state, pause the account on a 429; its capped Retry-After."""
        statement = parse_rate_headers(answer.headers, now=self._clock.time()) if self._limiter.learn else None
        wait = retry_after(answer.headers, now=self._clock.time())
        if wait is not None:  # an absurd one (an epoch read as seconds, a typo) must not stop the account for days
            wait = min(wait, self.longest_pause_s)
        if statement is not None:
            self._limiter.observe(statement, retry_after=wait is not None and answer.status_code == 429)
        if answer.status_code == 429:
            self._on_rate_limited(wait, statement)
        return wait

    def _on_rate_limited(self, wait: float | None, statement: Statement | None) -> None:
        """Pause the account: Retry-After first, then the stated reset of a used-up quota, then the window."""
        self._metrics.incr("rate_limited")
        window = self._limiter.rate.window_s
        if wait is None and statement is not None and statement.used_up and statement.reset_s is not None:
            wait = min(statement.reset_s, window) or None
        self._limiter.pause(wait if wait is not None else window)
        if self._limiter.learn and (statement is None or not statement.used_up):
            detail = "no rate-limit header" if statement is None else f"headers said {statement.describe()}"
            self._limiter.learn_from_429(detail)
