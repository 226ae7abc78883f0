"""The plain-Celery baseline: the same API call, done the way a Celery user would without the bridge.

Its own Celery app on the same (private) Redis, queue ``plain``. Each worker
process fetches its own bearer token once and keeps it. ``plain.get`` is the
quota baseline: ``@app.task(rate_limit=<the quota>)`` -- Celery's limit is
per worker process, not global -- and a 429 is retried after ``Retry-After``.
``plain.get_and_callback`` is the overhead baseline: the GET, then a Standard
Webhooks-signed POST of the outcome to the callback URL, in one task.
Configured by ``PLAIN_*`` variables (see ``plain_settings``).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import redis
from celery import Celery, Task
from standardwebhooks.webhooks import Webhook

PLAIN_QUEUE = "plain"
GET_TASK = "plain.get"
GET_AND_CALLBACK_TASK = "plain.get_and_callback"
DONE_KEY = "plain:done"


def plain_settings(
    redis_url: str, api_url: str, token_url: str, *, rate_limit: str | None, callback_secret: str
) -> dict[str, str]:
    """The ``PLAIN_*`` variables of a baseline worker."""
    values = {
        "PLAIN_BROKER_URL": redis_url,
        "PLAIN_API_URL": api_url,
        "PLAIN_TOKEN_URL": token_url,
        "PLAIN_CALLBACK_SECRET": callback_secret,
    }
    if rate_limit:
        values["PLAIN_RATE_LIMIT"] = rate_limit
    return values


class Upstream:
    """One process's HTTP client, token and Redis connection (rebuilt after a fork)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.api_url = env["PLAIN_API_URL"].rstrip("/")
        self.token_url = env["PLAIN_TOKEN_URL"]
        self.webhook = Webhook(env["PLAIN_CALLBACK_SECRET"])
        self.redis = redis.Redis.from_url(env["PLAIN_BROKER_URL"])
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        self.http = httpx.Client(timeout=30, limits=limits, trust_env=False)
        self.pid = os.getpid()
        self._token: str | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        """This process's bearer token, fetched on first use."""
        with self._lock:
            if self._token is None:
                form = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}
                answer = self.http.post(self.token_url, data={**form, "grant_type": "client_credentials"})
                answer.raise_for_status()
                self._token = str(answer.json()["access_token"])
            return self._token

    def get(self, path: str, query: dict[str, str]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        return self.http.get(self.api_url + path, params=query or None, headers=headers)

    def callback(self, url: str, job_id: str, answer: httpx.Response) -> int:
        """POST the signed outcome; returns the receiver's status."""
        now = datetime.now(UTC)
        payload = {
            "type": "operation.succeeded" if answer.is_success else "operation.failed",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            # "status" as the bridge's JobStatus has it: the harness's receiver keys arrivals on id + status
            "data": {
                "id": job_id,
                "status": "succeeded" if answer.is_success else "failed",
                "status_code": answer.status_code,
                "body": answer.json(),
            },
        }
        body = json.dumps(payload, separators=(",", ":"))
        msg_id = f"msg_{job_id}"
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(msg_id, now, body),
        }
        return self.http.post(url, content=body.encode(), headers=headers).status_code


_upstream: Upstream | None = None
_upstream_lock = threading.Lock()


def upstream() -> Upstream:
    global _upstream
    with _upstream_lock:
        if _upstream is None or _upstream.pid != os.getpid():
            _upstream = Upstream(os.environ)
        return _upstream


def make_app(broker_url: str, *, rate_limit: str | None) -> Celery:
    """The baseline's Celery app; ``rate_limit`` goes on ``plain.get`` (``None``: no limit)."""
    app = Celery("plain", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=PLAIN_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )

    @app.task(name=GET_TASK, bind=True, rate_limit=rate_limit, max_retries=100)  # type: ignore[untyped-decorator]
    def get(self: Task, path: str, query: dict[str, str]) -> int:
        up = upstream()
        answer = up.get(path, query)
        if answer.status_code == 429:
            raise self.retry(countdown=int(answer.headers.get("retry-after", "1")))
        up.redis.incr(DONE_KEY)
        return answer.status_code

    @app.task(name=GET_AND_CALLBACK_TASK, bind=True, max_retries=10)  # type: ignore[untyped-decorator]
    def get_and_callback(self: Task, job_id: str, path: str, query: dict[str, str], callback_url: str) -> int:
        up = upstream()
        answer = up.get(path, query)
        status = up.callback(callback_url, job_id, answer)
        if not 200 <= status < 300:
            raise self.retry(countdown=5)
        return answer.status_code

    return app


def worker_app() -> Celery:
    """The app of a baseline worker process, from ``PLAIN_*`` variables."""
    return make_app(os.environ["PLAIN_BROKER_URL"], rate_limit=os.environ.get("PLAIN_RATE_LIMIT") or None)


def send(app: Celery, task: str, args: list[Any]) -> str:
    """Queue one baseline task (one broker round trip, as ``delay`` does); returns its id."""
    task_id = uuid.uuid4().hex
    app.send_task(task, args=args, queue=PLAIN_QUEUE, task_id=task_id)
    return task_id
