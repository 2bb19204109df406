"""Credentials for connectors: OAuth 2.0 tokens (refreshed), bearer and ``token`` schemes."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from .errors import AuthenticationError, ConfigurationError, InvalidResponseError, TransportError
from .http import _tool_message, raise_for_response


class OAuth2TokenAuth(requests.auth.AuthBase):
    """Bearer tokens from an OAuth 2.0 token endpoint, fetched lazily and refreshed.

    Grants: ``password`` and ``client_credentials``. A refresh token, when the server
    gives one, is used first; if refused, the original grant is repeated.
    """

    def __init__(self, token_url: str, grant: str, client_id: str, client_secret: str, *,
                 username: str | None = None, password: str | None = None, timeout: tuple[float, float] = (5.0, 30.0),
                 skew_seconds: float = 60.0, clock: Any = time.monotonic) -> None:
        if grant not in ("password", "client_credentials"):
            raise ConfigurationError(f"unsupported OAuth grant {grant!r}")
        self.token_url, self.grant = token_url, grant
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.timeout, self.skew, self.clock = timeout, skew_seconds, clock
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.expires_at = 0.0
        self.http = requests.Session()
        # threads of one instance share the token: one of them fetches it, the others wait for it
        self._lock = threading.RLock()

    def invalidate(self) -> None:
        self.access_token = None

    def _request_token(self, form: dict[str, str]) -> dict[str, Any]:
        what = f"POST {self.token_url}"
        try:
            response = self.http.post(self.token_url, data=form, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.Timeout:
            raise TransportError(f"{what}: timed out") from None
        except requests.ConnectionError:
            raise TransportError(f"{what}: no connection") from None
        if response.status_code in (400, 401):
            raise AuthenticationError(f"{what}: OAuth token refused (HTTP {response.status_code}, {_tool_message(response) or 'no reason given'}); "
                                      f"check client_id, client_secret and the {self.grant} grant")
        raise_for_response(response, what)
        try:
            body = response.json()
        except ValueError:
            raise InvalidResponseError(f"{what}: token response is not JSON") from None
        if not isinstance(body, dict) or not body.get("access_token"):
            raise InvalidResponseError(f"{what}: token response has no access_token")
        return body

    def token(self) -> str:
        with self._lock:
            return self._token()

    def _token(self) -> str:
        if self.access_token and self.clock() < self.expires_at - self.skew:
            return self.access_token
        base = {"client_id": self.client_id, "client_secret": self.client_secret}
        body = None
        if self.refresh_token:
            try:
                body = self._request_token({**base, "grant_type": "refresh_token", "refresh_token": self.refresh_token})
            except AuthenticationError:
                self.refresh_token = None  # expired or revoked: fall back to the original grant
        if body is None:
            form = {**base, "grant_type": self.grant}
            if self.grant == "password":
                form.update(username=self.username or "", password=self.password or "")
            body = self._request_token(form)
        self.access_token = str(body["access_token"])
        self.refresh_token = body.get("refresh_token") or self.refresh_token
        try:
            lifetime = float(body.get("expires_in") or 1800)
        except (TypeError, ValueError):
            lifetime = 1800.0
        self.expires_at = self.clock() + lifetime
        return self.access_token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def close(self) -> None:
        self.http.close()


class SchemeTokenAuth(requests.auth.AuthBase):
    """``Authorization: <scheme> <token>``: Bearer for a Jira Data Center personal access token, ``token`` for RT.

    Its repr never shows the token, so a logged session or a failing test does not print it.
    """

    def __init__(self, scheme: str, token: str) -> None:
        self.scheme, self._token = scheme, token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"{self.scheme} {self._token}"
        return request

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scheme!r}, '***')"
