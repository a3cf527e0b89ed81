"""Bearer tokens for the HTTP surfaces: the fault admin's one token, and decide's tokens file.

A request presents ``Authorization: Bearer <token>``. Tokens are compared in constant time:
the SHA-256 digests of the presented and each known token go through
``hmac.compare_digest``, every known token is compared (no early exit), so the time to answer
says nothing about how much of a guess was right, nor which entry matched.

The decide tokens file (``decide_tokens_file``) is TOML, one table per token::

    [[token]]
    token = "a long random string"
    tenants = ["acme", "globex"]     # or ["*"]: any tenant

Errors in it name the entry by its position, never by the token.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from natsrouter.errors import ConfigError

#: In a tokens file, a tenant list holding this lets the token act for every tenant.
ANY_TENANT = "*"
#: Shorter tokens are refused: a guessable token is no credential.
MIN_TOKEN_LENGTH = 16
_FILE_KEY = "decide_tokens_file"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_matches(presented: str | None, expected: str) -> bool:
    """True when ``presented`` is ``expected``; constant time in what the two hold."""
    same = hmac.compare_digest(_digest(presented or ""), _digest(expected))
    return same and presented is not None


def check_token(key: str, token: str) -> None:
    """A configured token: long enough, no whitespace (it travels in a header)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(key, f"must be at least {MIN_TOKEN_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(key, "must not contain spaces or control characters")


@dataclass(frozen=True)
class DecideTokens:
    """Which tenants each token may act for."""

    _grants: tuple[tuple[bytes, frozenset[str]], ...]
    tokens: tuple[str, ...] = field(repr=False)

    def tenants_for(self, presented: str | None) -> frozenset[str] | None:
        """The tenants of the presented token, or None when it is missing or unknown."""
        if presented is None:
            return None
        digest = _digest(presented)
        found: frozenset[str] | None = None
        for known, tenants in self._grants:
            if hmac.compare_digest(known, digest):
                found = tenants
        return found

    @staticmethod
    def allows(tenants: Iterable[str], tenant_id: str) -> bool:
        allowed = frozenset(tenants)
        return ANY_TENANT in allowed or tenant_id in allowed


def load_decide_tokens(path: str) -> DecideTokens:
    """Read and check a tokens file; any problem is a ``ConfigError`` on decide_tokens_file."""
    try:
        with Path(path).open("rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(_FILE_KEY, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(_FILE_KEY, f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_FILE_KEY, f"{path} is not valid TOML: {exc}") from None
    entries = document.get("token")
    if set(document) != {"token"} or not isinstance(entries, list) or not entries:
        raise ConfigError(_FILE_KEY, f"{path}: expected one or more [[token]] tables only")
    grants: list[tuple[bytes, frozenset[str]]] = []
    tokens: list[str] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: token #{number}"
        if not isinstance(entry, dict) or set(entry) != {"token", "tenants"}:
            raise ConfigError(_FILE_KEY, f"{where}: expected exactly `token` and `tenants`")
        token, tenants = entry["token"], entry["tenants"]
        if not isinstance(token, str):
            raise ConfigError(_FILE_KEY, f"{where}: `token` must be a string")
        try:
            check_token(_FILE_KEY, token)
        except ConfigError as exc:
            raise ConfigError(_FILE_KEY, f"{where}: `token` {str(exc).split(': ', 1)[1]}") from None
        if (
            not isinstance(tenants, list)
            or not tenants
            or not all(isinstance(t, str) and t for t in tenants)
        ):
            raise ConfigError(_FILE_KEY, f"{where}: `tenants` must be a non-empty list of names")
        if token in tokens:
            raise ConfigError(_FILE_KEY, f"{where}: the same token is listed twice")
        tokens.append(token)
        grants.append((_digest(token), frozenset(tenants)))
    return DecideTokens(tuple(grants), tuple(tokens))
