"""Server URLs of ``nats_url``: parsed, and stripped of the credentials written in them.

The userinfo of a URL is found by hand (it ends at the last ``@``), so a password holding
``@``, ``:``, ``/``, ``?``, ``#`` or ``%`` is neither cut short nor partly shown; the
credentials move to their own keys and every URL the Router keeps is bare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from natsrouter.errors import ConfigError

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without userinfo, raw userinfo)``: the userinfo ends at the LAST ``@``.

    Parsed by hand rather than with ``urlsplit``, which ends the authority at the first
    ``/``, ``?`` or ``#`` and so would cut a password containing one, leaving a piece of it
    in what is shown as the host.
    """
    scheme = _SCHEME.match(url)
    prefix = scheme.group(0) if scheme else ""
    rest = url[len(prefix) :]
    if "@" not in rest:
        return url, None
    userinfo, _, host = rest.rpartition("@")
    return prefix + host, userinfo


def redact_url(url: str) -> str:
    """Hide URL userinfo (user, password, token), whatever it holds: ``nats://***@host:4222``."""
    clean, userinfo = split_userinfo(url)
    if userinfo is None:
        return url
    scheme = _SCHEME.match(clean)
    prefix = scheme.group(0) if scheme else ""
    return f"{prefix}***@{clean[len(prefix) :]}"


@dataclass(frozen=True)
class UrlCredentials:
    """Credentials written in ``nats_url`` (percent-escapes decoded), moved out of the URL."""

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    @classmethod
    def parse(cls, userinfo: str) -> UrlCredentials:
        """``user:password`` (split at the first ``:``) or ``token``; ``%XX`` is decoded."""
        user, colon, password = userinfo.partition(":")
        if colon:
            return cls(user=unquote(user), password=unquote(password))
        return cls(token=unquote(userinfo))


def parse_server_list(key: str, value: Any) -> tuple[tuple[str, ...], UrlCredentials | None]:
    """Parse ``nats_url``: a comma-separated string (or TOML list) of server URLs.

    Returns the URLs without userinfo and the credentials they carried, so that no URL the
    Router keeps, shows or hands to nats-py holds a secret. Either every server carries the
    same credentials or none carries any.
    """
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(
            key, f"expected a comma-separated string or a list, got {value_kind(value)}"
        )
    for raw in items:
        if not isinstance(raw, str):
            raise ConfigError(key, f"expected server URLs as strings, got {value_kind(raw)}")
    urls = [url for url in (raw.strip() for raw in items) if url]
    # Checked before any URL is: a raw comma in a password or token splits it into a piece
    # without userinfo (which would be quoted as a bad host, or even used as a host) and a
    # piece with the rest; so some servers with credentials and some without is refused,
    # quoting nothing.
    if len({split_userinfo(url)[1] is None for url in urls}) > 1:
        raise ConfigError(
            key,
            "some servers carry credentials and others do not (a comma in a password or "
            "token must be written %2C); set them once with nats_user and nats_password "
            "(or nats_token)",
        )
    servers: list[str] = []
    userinfos: set[str] = set()
    for url in urls:
        raw = url
        if not _SCHEME.match(url):
            url = f"nats://{url}"
        url, userinfo = split_userinfo(url)
        if userinfo is not None:
            userinfos.add(userinfo)
        shown = redact_url(raw) if userinfo is not None else url
        try:
            parts = urlsplit(url)
            port = parts.port
            hostname = parts.hostname
        except ValueError as exc:
            raise ConfigError(key, f"bad host or port in {shown}") from exc
        if parts.scheme not in ("nats", "tls") or not hostname:
            raise ConfigError(key, f"expected nats://host:port or tls://host:port, got {shown}")
        if port is None:
            url = url.rstrip("/") + ":4222" if parts.path in ("", "/") else url
        servers.append(url)
    if len(userinfos) > 1:
        raise ConfigError(
            key,
            "the servers carry different credentials; set them once with nats_user and "
            "nats_password (or nats_token)",
        )
    credentials = UrlCredentials.parse(userinfos.pop()) if userinfos else None
    return tuple(servers), credentials


def value_kind(value: Any) -> str:
    """A value's TOML type, for messages that must not echo the value (it may be secret)."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)
