"""The Celery tasks: a few lines each around the executor and the callback sender.

Both are ``acks_late``: a worker killed mid-task leaves its message to be
redelivered. Redis trouble puts the message back; any other unexpected error
fails the job visibly (kind ``internal_error``) instead of leaving it stuck.
"""

from __future__ import annotations

import logging

import redis
from celery.exceptions import Reject

from optimum_bridge.callbacks.deliveries import batch_subject
from optimum_bridge.callbacks.sender import unsigned_letter
from optimum_bridge.errors import ConfigError
from optimum_bridge.jobs.executor import ChainedJobError
from optimum_bridge.keys import DEFAULT_ACCOUNT, DELIVER_BATCH_TASK, DELIVER_TASK, EXECUTE_TASK, JobField
from optimum_bridge.process import runtime
from optimum_bridge.schemas import ErrorInfo
from optimum_bridge.worker import app

log = logging.getLogger(__name__)


@app.task(name=EXECUTE_TASK, acks_late=True)
def execute(job_id: str, dispatch: int = 0, account: str = DEFAULT_ACCOUNT) -> str:
    """Run the attempt of job ``job_id`` that the scheduler's dispatch number ``dispatch`` gave a slot."""
    rt = runtime.current()
    try:
        return rt.executor.run(job_id, dispatch, account)
    except redis.RedisError as exc:
        log.warning("job %s: Redis unavailable (%s: %s); message put back", job_id, type(exc).__name__, exc)
        raise Reject(str(type(exc).__name__), requeue=True) from None
    except ChainedJobError as exc:  # a job the thread took after this one
        log.exception("job %s: unexpected error", exc.job_id)
        _fail_visibly(rt, exc.job_id, exc.__cause__ or exc)
        raise
    except Exception as exc:
        log.exception("job %s: unexpected error", job_id)
        _fail_visibly(rt, job_id, exc)
        raise


def _fail_visibly(rt: runtime.Runtime, job_id: str, exc: BaseException) -> None:
    """Finish the job as ``internal_error`` (with its callback) rather than leave it running."""
    error = ErrorInfo(kind="internal_error", message=f"unexpected {type(exc).__name__} in the bridge")
    try:
        operation = rt.jobs.operation(job_id)
        batch = rt.jobs.field(job_id, JobField.batch)
        rt.jobs.finish(
            job_id,
            "",
            succeeded=False,
            response=None,
            error=error,
            callback=operation.callback is not None,
            batch_id=rt.keys.batch_id(batch) if batch else None,
        )
    except Exception:
        log.exception("job %s: could not record the internal error either", job_id)


@app.task(name=DELIVER_TASK, acks_late=True)
def deliver_callback(job_id: str, attempt: int) -> str:
    """Deliver (attempt ``attempt`` of) the callback of job ``job_id``."""
    return _deliver(job_id, attempt)


@app.task(name=DELIVER_BATCH_TASK, acks_late=True)
def deliver_batch_callback(batch_id: str, attempt: int) -> str:
    """Deliver (attempt ``attempt`` of) the ``batch.completed`` callback of batch ``batch_id``."""
    return _deliver(batch_subject(batch_id), attempt)


def _deliver(subject: str, attempt: int) -> str:
    rt = runtime.current()
    try:
        sender = rt.callbacks
    except ConfigError as exc:  # no signing key: keep the callback where an operator can replay it
        rt.deliveries.settle(subject, "", "dead", dead_letter=unsigned_letter(subject, attempt, str(exc)))
        log.error("%s: callback dead-lettered: %s", subject, exc)
        return "dead"
    try:
        return sender.deliver(subject, attempt)
    except redis.RedisError as exc:
        log.warning("%s: Redis unavailable (%s: %s); callback message put back", subject, type(exc).__name__, exc)
        raise Reject(str(type(exc).__name__), requeue=True) from None
