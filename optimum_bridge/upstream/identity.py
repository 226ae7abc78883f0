"""The identity server: client-credentials tokens for one account (``TokenStore`` asks it for them)."""

from __future__ import annotations

import httpx
from pydantic import SecretStr, ValidationError

from optimum_bridge.errors import CredentialsRejected, TokenError
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.schemas import TokenResponse


class IdentityClient:
    """Fetches client-credentials tokens from the identity server."""

    def __init__(
        self, http: httpx.Client, *, token_url: str, client_id: str, client_secret: SecretStr, metrics: Metrics
    ) -> None:
        self._http = http
        self._url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._metrics = metrics

    def __repr__(self) -> str:
        return f"IdentityClient(token_url={self._url!r}, client_id={self._client_id!r})"

    def fetch(self) -> TokenResponse:
        """A new token, or ``CredentialsRejected`` / ``TokenError``."""
        form = {
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        self._metrics.incr("token_requests")
        try:
            answer = self._http.post(self._url, data=form, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise TokenError("token_network", f"identity server unreachable: {type(exc).__name__}") from None
        if answer.status_code in (400, 401):
            raise CredentialsRejected(
                "credentials_rejected", f"identity server refused the client credentials ({answer.status_code})"
            )
        if answer.status_code != 200:
            raise TokenError("token_http", f"identity server answered {answer.status_code}")
        try:
            return TokenResponse.model_validate_json(answer.content)
        except ValidationError:
            raise TokenError(
                "token_invalid", "identity server sent an answer that is not a valid token response"
            ) from None
