"""Calling the API as a token holder does: a token of a role, and a client that sends it."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from flask import Flask

from plugin.models import utcnow
from plugin.services import tokens

_names = itertools.count(1)


def token_for(app: Flask, role: str = "auditor", *, days: float = 30) -> str:
    with app.app_context():
        _, plaintext = tokens.create(f"test-{role}-{next(_names)}", role, utcnow() + timedelta(days=days), "test")
    return plaintext


class ApiClient:
    """The test client with a bearer token on every request."""

    def __init__(self, app: Flask, role: str = "auditor") -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {token_for(app, role)}"}

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.headers, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.client.post(url, headers=self.headers, **kw)

    def patch(self, url: str, **kw: Any) -> Any:
        return self.client.patch(url, headers=self.headers, **kw)

    def json(self, url: str) -> Any:
        r = self.get(url)
        assert r.status_code == 200, (url, r.status_code, r.get_data(as_text=True)[:500])
        return r.get_json()

    def pages(self, url: str) -> list[Any]:
        """Every item of a paged list, following next_cursor."""
        items: list[Any] = []
        cursor = None
        sep = "&" if "?" in url else "?"
        for _ in range(10_000):
            body = self.json(url + (f"{sep}cursor={cursor}" if cursor else ""))
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("the cursor never ended")
