"""The bridge's error hierarchy.

``RetryableError`` carries the delay the caller should wait before trying
again (``None``: use the backoff schedule); ``FinalError`` ends the job.
Messages never contain secrets: they name fields and kinds, not values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic_core import PydanticCustomError

#: The error type of ``blame``.
BLAME = "blamed_field"


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A setting is missing or malformed; the message names the variable."""


class BridgeUnavailable(BridgeError):
    """The bridge could not keep its promise now (Redis did not reach ``BRIDGE_REDIS_MIN_REPLICAS``
    replicas in time): retry, with the same idempotency key (HTTP ``503`` at the ingress)."""


class JobNotFound(BridgeError):
    """No job with that id (unknown or expired)."""


class NotWaiting(BridgeError):
    """A control (cancel, reprioritise) on a job whose call is under way or that is finished."""


class CallbackURLRefused(BridgeError):
    """A callback URL points somewhere the bridge may not send to."""


class AttemptError(BridgeError):
    """One attempt at an API call failed; ``kind`` is a stable machine name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class RetryableError(AttemptError):
    """The attempt may succeed later; ``delay`` overrides the backoff when set."""

    def __init__(self, kind: str, message: str, *, delay: float | None = None) -> None:
        super().__init__(kind, message)
        self.delay = delay


class FinalError(AttemptError):
    """Trying again would not help."""


class TokenError(RetryableError):
    """The identity server did not give us a token (network, 5xx, bad answer)."""


class CredentialsRejected(TokenError):
    """The identity server refused our client credentials (fixable by an operator: retried)."""


class NetworkError(RetryableError):
    """No answer from the API; ``maybe_sent`` if the request may have reached it."""

    def __init__(self, kind: str, message: str, *, maybe_sent: bool) -> None:
        super().__init__(kind, message)
        self.maybe_sent = maybe_sent


class Deferred(BridgeError):
    """No rate-limit slot to send now (a re-send after a 401, or a start later than its slot would
    break the window): nothing was sent; the job goes back to its lane after ``delay``."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"no rate-limit slot within the wait budget; next in {delay:.1f}s")
        self.delay = delay


def field_problems(
    errors: Iterable[Mapping[str, Any]],
    *,
    prefix: str = "",
    whole: str = "",
    name: Callable[[tuple[Any, ...]], str] | None = None,
) -> list[tuple[str, str]]:
    """Each of pydantic's errors as ``(field, message)``, never echoing the value that failed.

    The field is the dotted location, under ``prefix``; ``whole`` names what a
    check without a location (a check across fields) is about; ``name`` maps a
    location to the name users know it by (an environment variable).
    """
    found = []
    for error in errors:
        location = tuple(error.get("loc", ()))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error.get("type") == BLAME:  # a check across fields that names the one it blames
            location, message = (*location, error["ctx"]["field"]), error["ctx"]["problem"]
        dotted = (name(location) if name else ".".join(str(part) for part in location)) if location else ""
        field = f"{prefix}.{dotted}" if prefix and dotted else prefix or dotted or whole
        found.append((field, message))
    return found


def blame(field: str, problem: str) -> PydanticCustomError:
    """What a check across fields raises to name the field at fault: ``field_problems`` puts it in the
    location, so the one-line error reads ``api_url: ...`` and not a sentence without a field."""
    return PydanticCustomError(BLAME, "{field}: {problem}", {"field": field, "problem": problem})


def one_line(problem: tuple[str, str]) -> str:
    """``field: message``, or the message alone where no field is named."""
    field, message = problem
    return f"{field}: {message}" if field else message


def first_problem(exc: Any, *, whole: str = "", prefix: str = "") -> str:
    """One line naming the first offending field of a pydantic ``ValidationError``."""
    return one_line(field_problems(exc.errors(include_input=False, include_url=False), prefix=prefix, whole=whole)[0])
