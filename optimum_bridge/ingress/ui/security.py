"""Who may see ``/ui``, and which POSTs to trust.

The dashboard is behind the same keys as the API, presented as HTTP Basic
(the key is the password; the user name is ignored), so a browser can ask for
it. Every state-changing button is a form POST that must carry a CSRF token
derived from the caller's key (an HMAC, so replicas agree and the page never
holds the key itself) and must not come from another site: a foreign
``Origin`` or a ``Sec-Fetch-Site`` other than ``same-origin`` is refused, as a
missing or wrong token is, with 403 and nothing changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from optimum_bridge.ingress.auth import Caller
from optimum_bridge.ingress.http import ProblemError

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="optimum-bridge", charset="UTF-8"'}
_CSRF_CONTEXT = b"optimum-bridge /ui csrf v1"


@dataclass(frozen=True)
class Viewer:
    """A dashboard caller: the accounts its key may use, and its CSRF token."""

    caller: Caller
    csrf: str

    def sees(self, accounts: list[str] | tuple[str, ...]) -> bool:
        """Whether the key may use every one of ``accounts`` (a batch over several needs them all)."""
        return bool(accounts) and all(self.caller.may_use(account) for account in accounts)


def csrf_token(key: str) -> str:
    """The CSRF token of a key: an HMAC under the key's digest, useless without the key and stable across replicas."""
    return hmac.new(hashlib.sha256(key.encode()).digest(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def _basic_password(header: str | None) -> str | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


async def require_viewer(request: Request) -> Viewer:
    """401 with a Basic challenge unless the request carries an accepted key as its Basic password."""
    password = _basic_password(request.headers.get("authorization"))
    if password is None:
        raise ProblemError(
            401, "the dashboard needs HTTP Basic: any user name, an API key as the password", headers=BASIC_CHALLENGE
        )
    caller: Caller | None = request.app.state.key_ring.match(password)
    if caller is None:
        raise ProblemError(401, "the API key is not accepted", headers=BASIC_CHALLENGE)
    return Viewer(caller, csrf_token(password))


ViewerDep = Annotated[Viewer, Depends(require_viewer)]


def same_site(request: Request) -> bool:
    """False when the browser says the request comes from another site (``Sec-Fetch-Site``, ``Origin``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser, or an old one: the token alone decides
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def check_post(request: Request, viewer: Viewer, form: dict[str, str]) -> None:
    """403, changing nothing, unless the POST is same-site and carries the viewer's CSRF token."""
    if not same_site(request):
        raise ProblemError(403, "cross-site request refused")
    if not hmac.compare_digest(form.get("csrf", "").encode(), viewer.csrf.encode()):
        raise ProblemError(403, "missing or wrong CSRF token (reload the page)")
