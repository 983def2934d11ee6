"""Who may call the /v1 API: the API key as a bearer token, or an --auth account (a bearer `user:password`,
or HTTP Basic). A FastAPI dependency of every /v1 route; a refusal is a 401 in OpenAI's shape."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Callable, Iterable

from starlette.requests import Request

from .schema import ApiError

Accounts = Iterable[tuple[str, str]] | Callable[[str, str], bool] | None


class Guard:
    """Who may call the API: the API key as a bearer token, or an --auth account."""

    def __init__(self, api_key: str | None, accounts: Accounts):
        self.api_key = api_key or None
        self.accounts = accounts if callable(accounts) else [(str(u), str(p)) for u, p in accounts or ()]

    def check(self, request: Request) -> None:
        """Passes a request with good credentials (or any, where none are set); refuses the rest (401)."""
        if not self.api_key and not self.accounts:
            return
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        scheme, credential = scheme.lower(), credential.strip()
        if scheme == "bearer" and (_same(credential, self.api_key) or self._account(*_pair(credential))):
            return
        if scheme == "basic" and self._account(*_pair(_basic(credential))):
            return
        how = "Authorization: Bearer <API key>" + (" (or user:password of an --auth account)" if self.accounts else "")
        raise ApiError(401, f"missing or wrong credentials: send {how}; the openai client sends its api_key this way",
                       code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer realm="chat"'})

    def user(self, request: Request) -> str | None:
        """The --auth account a request came with (None: the API key, or no credentials where none are needed).
        Its owner's skills are the request's; a key's are the skills file's."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        scheme, credential = scheme.lower(), credential.strip()
        user, password = _pair(_basic(credential) if scheme == "basic" else credential if scheme == "bearer" else "")
        return user if self._account(user, password) else None

    def _account(self, user: str | None, password: str | None) -> bool:
        if user is None or password is None or not self.accounts:
            return False
        if callable(self.accounts):
            try:
                return bool(self.accounts(user, password))
            except Exception:  # noqa: BLE001 - a failing auth function refuses, it doesn't crash the request
                return False
        return any(_same(user, u) & _same(password, p) for u, p in self.accounts)  # & : no early exit


def _same(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison, so response timing can't reveal how much of a secret matched."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _pair(credential: str) -> tuple[str | None, str | None]:
    user, sep, password = credential.partition(":")
    return (user, password) if sep else (None, None)


def _basic(credential: str) -> str:
    try:
        return base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
