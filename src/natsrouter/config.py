"""Settings: one frozen object, built from a TOML file and ``ROUTER_*`` environment variables.

Keys and defaults are the public contract (CONTRACT §5, docs/configuration.md). Every value
is validated when the object is built; a bad or unknown key raises ``ConfigError`` naming
the key. Only the CLI reads files and the environment; everything else receives ``Settings``.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from natsrouter.auth import check_token, load_decide_tokens
from natsrouter.config_files import check_readable, read_config_file
from natsrouter.config_files import tls_context as _tls_context
from natsrouter.errors import ConfigError
from natsrouter.server_urls import (
    UrlCredentials,
    parse_server_list,
    redact_url,
    split_userinfo,
    value_kind,
)

__all__ = ["KEYS", "Settings", "build_settings", "load_settings", "parse_server_list", "redact_url"]

ENV_PREFIX = "ROUTER_"
#: The largest integer any key takes (24.8 days in milliseconds).
MAX_INT = 2**31 - 1


class ExhaustedPolicy(StrEnum):
    """What the link does once ``nats_reconnect_attempts`` attempts have failed."""

    KEEP_RETRYING = "keep_retrying"
    FAIL_OPEN = "fail_open"
    EXIT = "exit"


class OverflowPolicy(StrEnum):
    """What a full pending queue does with one more operation."""

    DROP_OLDEST = "drop_oldest"
    REJECT_NEW = "reject_new"


class PendingStore(StrEnum):
    """Where the pending queue lives (docs/configuration.md, ``nats_pending_store``)."""

    #: ``natsrouter run``: the spool; the library's ``Link``: memory unless a path is set.
    AUTO = "auto"
    #: The SQLite spool at ``nats_pending_spool_path`` (``DEFAULT_SPOOL_PATH`` when empty).
    SPOOL = "spool"
    #: Process memory: lost with the process.
    MEMORY = "memory"


#: The spool of ``natsrouter run`` when no path is set: relative to where it runs, beside the
#: embedded server's ``data/nats``.
DEFAULT_SPOOL_PATH = "data/spool.db"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _min(lower: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lower else f"must be >= {lower:g}, got {v}"


def _range(lower: float, upper: float) -> Callable[[Any], str | None]:
    return lambda v: None if lower <= v <= upper else f"must be in [{lower:g}, {upper:g}], got {v}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be a TCP port (0-65535), got {v}"


def _subject(v: str) -> str | None:
    """A subject the Router publishes or listens on: tokens, no wildcards, no spaces."""
    tokens = v.split(".")
    if not v or any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
        return f"must be a NATS subject without wildcards (a.b.c), got {v!r}"
    return None


def _patterns(v: frozenset[str]) -> str | None:
    """NATS subject patterns: tokens, ``*`` for one token, ``>`` only as the last token."""
    for pattern in sorted(v):
        tokens = pattern.split(".")
        if any(
            not t or any(c.isspace() for c in t) or (t == ">" and i != len(tokens) - 1)
            for i, t in enumerate(tokens)
        ):
            return f"must be NATS subject patterns (a.b, a.*, a.>), got {pattern!r}"
    return None


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _key(default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class Settings:
    """Every configuration key; field names are the keys of CONTRACT §5."""

    nats_url: tuple[str, ...] = _key(())
    nats_user: str = _key("")
    nats_password: str = field(default="", repr=False)
    nats_token: str = field(default="", repr=False)
    nats_creds_file: str = _key("")
    nats_nkey_seed_file: str = _key("")
    nats_tls_ca_file: str = _key("")
    nats_tls_cert_file: str = _key("")
    nats_tls_key_file: str = _key("")
    nats_connect_timeout_ms: int = _key(2000, _min(1))
    nats_reconnect_attempts: int = _key(5, _min(0))
    nats_reconnect_delay_ms: int = _key(500, _min(1))
    nats_max_reconnect_delay_ms: int = _key(2000, _min(1))
    nats_reconnect_jitter: float = _key(0.2, _range(0.0, 1.0))
    nats_on_reconnect_exhausted: ExhaustedPolicy = _key(ExhaustedPolicy.KEEP_RETRYING)
    nats_ping_interval_ms: int = _key(2000, _min(10))
    nats_fail_open_mode: bool = _key(False)
    nats_max_pending_operations: int = _key(1000, _min(0))
    nats_max_pending_bytes: int = _key(16 * 1024 * 1024, _min(0))
    nats_pending_overflow: OverflowPolicy = _key(OverflowPolicy.DROP_OLDEST)
    nats_pending_operation_timeout_ms: int = _key(0, _min(0))
    nats_pending_store: PendingStore = _key(PendingStore.AUTO)
    nats_pending_spool_path: str = _key("")
    nats_replay_max_in_flight: int = _key(100, _min(1))
    nats_request_timeout_ms: int = _key(5000, _min(1))
    nats_max_payload_size: int = _key(1024 * 1024, _min(1))
    nats_fault_injection_enabled: bool = _key(False)
    nats_fault_injection_token: str = field(default="", repr=False)
    decide_subject: str = _key("beamline.router.v1.decide", _subject)
    decide_queue_group: str = _key("router-decide-group", _non_empty)
    decide_max_in_flight: int = _key(1000, _min(1))
    assignment_subject: str = _key("caf.exec.assign.v1", _subject)
    assignment_subjects_allowed: frozenset[str] = _key(frozenset(), _patterns)
    ack_subject: str = _key("caf.exec.assign.v1.ack", _subject)
    result_subject: str = _key("caf.exec.result.v1", _subject)
    usage_subject: str = _key("beamline.usage.v1.metered", _subject)
    jetstream_manage_streams: bool = _key(True)
    jetstream_stream_replicas: int = _key(1, _range(1, 5))
    js_publish_retry_deadline_ms: int = _key(10_000, _min(0))
    js_max_deliver: int = _key(5, _min(1))
    js_ack_wait_ms: int = _key(30_000, _min(1))
    js_nak_delay_ms: int = _key(1000, _min(0))
    idempotency_ttl_seconds: int = _key(3600, _min(1))
    shared_state_enabled: bool = _key(False)
    shared_state_timeout_ms: int = _key(1000, _min(1))
    shared_state_retry_ms: int = _key(1000, _min(0))
    shared_state_breaker_sync_ms: int = _key(1000, _min(50))
    policies_path: str = _key("policies", _non_empty)
    policies_reload_interval_ms: int = _key(2000, _min(0))
    allowed_tenants: frozenset[str] = _key(frozenset())
    decide_tokens_file: str = _key("")
    http_host: str = _key("127.0.0.1")
    http_port: int = _key(8080, _port)
    shutdown_timeout_ms: int = _key(10_000, _min(0))
    embedded_nats_port: int = _key(4222, _port)
    embedded_nats_store_dir: str = _key("data/nats")
    metrics_host: str = _key("0.0.0.0")
    metrics_port: int = _key(9001, _port)
    log_level: LogLevel = _key(LogLevel.INFO)
    log_format: LogFormat = _key(LogFormat.JSON)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if f.type == "int" and not problem and getattr(self, f.name) > MAX_INT:
                # Beyond this, timers overflow and JetStream refuses the durations.
                problem = f"must be <= {MAX_INT}, got {getattr(self, f.name)}"
            if problem:
                raise ConfigError(f.name, problem)
        if self.nats_max_reconnect_delay_ms < self.nats_reconnect_delay_ms:
            raise ConfigError(
                "nats_max_reconnect_delay_ms",
                f"must be >= nats_reconnect_delay_ms ({self.nats_reconnect_delay_ms})",
            )
        if bool(self.nats_tls_cert_file) != bool(self.nats_tls_key_file):
            missing = "nats_tls_key_file" if self.nats_tls_cert_file else "nats_tls_cert_file"
            raise ConfigError(missing, "nats_tls_cert_file and nats_tls_key_file go together")
        subjects = ("decide_subject", "assignment_subject", "ack_subject", "result_subject")
        seen: dict[str, str] = {}
        for name in (*subjects, "usage_subject"):
            value = getattr(self, name)
            if value in seen:
                raise ConfigError(name, f"must differ from {seen[value]} ({value!r})")
            seen[value] = name
        self._check_pending_store()
        if self.nats_password and not self.nats_user:
            raise ConfigError("nats_user", "required when nats_password is set")
        if self.nats_token and (self.nats_user or self.nats_password):
            # The NATS client would send the user and password and drop the token silently.
            raise ConfigError(
                "nats_token", "set either nats_token or nats_user/nats_password, not both"
            )
        for name in (
            "nats_creds_file",
            "nats_nkey_seed_file",
            "nats_tls_ca_file",
            "nats_tls_cert_file",
            "nats_tls_key_file",
            "decide_tokens_file",
        ):
            path = getattr(self, name)
            if path:
                check_readable(name, path)
        tls_context(self)
        if self.decide_tokens_file:
            load_decide_tokens(self.decide_tokens_file)
        if self.nats_fault_injection_enabled and not self.nats_fault_injection_token:
            raise ConfigError(
                "nats_fault_injection_token",
                "required when nats_fault_injection_enabled is true (it guards /admin/faults)",
            )
        if self.nats_fault_injection_token:
            check_token("nats_fault_injection_token", self.nats_fault_injection_token)
        for url in self.nats_url:
            if split_userinfo(url)[1] is not None:
                raise ConfigError("nats_url", "credentials in a URL are taken by build_settings")

    def secrets(self) -> tuple[str, ...]:
        """Every secret value set, for the log output to mask wherever one appears."""
        tokens = (
            load_decide_tokens(self.decide_tokens_file).tokens if self.decide_tokens_file else ()
        )
        configured = (self.nats_password, self.nats_token, self.nats_fault_injection_token)
        return tuple(s for s in (*configured, *tokens) if s)

    def _check_pending_store(self) -> None:
        if self.nats_pending_store is PendingStore.MEMORY and self.nats_pending_spool_path:
            raise ConfigError(
                "nats_pending_store",
                "memory contradicts nats_pending_spool_path "
                f"({self.nats_pending_spool_path!r}): set one of them",
            )
        if self.nats_pending_store is PendingStore.SPOOL and not self.nats_pending_spool_path:
            # Frozen, but still being built: the resolved path is what every reader sees.
            object.__setattr__(self, "nats_pending_spool_path", DEFAULT_SPOOL_PATH)

    def durable_by_default(self) -> Settings:
        """The settings of ``natsrouter run``: ``auto`` keeps the queue in the spool."""
        if self.nats_pending_store is not PendingStore.AUTO or self.nats_pending_spool_path:
            return self
        return dataclasses.replace(self, nats_pending_store=PendingStore.SPOOL)

    @property
    def embedded(self) -> bool:
        """True when no server is configured and `natsrouter run` starts its own."""
        return not self.nats_url


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context of ``settings`` (see ``config_files.tls_context``)."""
    return _tls_context(
        settings.nats_tls_ca_file, settings.nats_tls_cert_file, settings.nats_tls_key_file
    )


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Turn one raw value (a TOML value or an environment string) into the key's type."""
    from_env = isinstance(value, str)
    if annotation == "frozenset[str]":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(
                key,
                f"expected a comma-separated string or a list of strings, got {value_kind(value)}",
            )
        return frozenset(i.strip() for i in items if i.strip())
    if annotation == "bool":
        if isinstance(value, bool):
            return value
        if from_env and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if from_env and value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(key, f"expected a boolean, got {value!r}")
    if annotation == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env:
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if annotation == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env:
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {value!r}")
    if annotation == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value_kind(value)}")
    enum_type = {
        cls.__name__: cls
        for cls in (ExhaustedPolicy, OverflowPolicy, PendingStore, LogFormat, LogLevel)
    }[annotation]
    try:
        return enum_type(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)
        raise ConfigError(key, f"expected one of {allowed}, got {value!r}") from None


_ANNOTATIONS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def build_settings(values: Mapping[str, Any]) -> Settings:
    """Build ``Settings`` from raw key/value pairs; unknown keys are an error."""
    parsed: dict[str, Any] = {}
    credentials: UrlCredentials | None = None
    for key, raw in values.items():
        if key not in _ANNOTATIONS:
            raise ConfigError(key, "unknown configuration key")
        if key == "nats_url":
            parsed[key], credentials = parse_server_list(key, raw)
        else:
            parsed[key] = _coerce(key, _ANNOTATIONS[key], raw)
    if credentials is not None:
        _take_url_credentials(parsed, credentials)
    return Settings(**parsed)


def _take_url_credentials(parsed: dict[str, Any], credentials: UrlCredentials) -> None:
    """Move the URL's credentials to their keys; a different value already set is an error."""
    for name, value in (
        ("nats_user", credentials.user),
        ("nats_password", credentials.password),
        ("nats_token", credentials.token),
    ):
        if not value:
            continue
        if parsed.get(name, "") not in ("", value):
            raise ConfigError("nats_url", f"the credentials in the URL differ from {name}")
        parsed[name] = value


# How Python reads a byte of the environment that is not UTF-8 (surrogateescape).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8080_TCP_ADDR`, ... for
# each Service; a Service named `router` makes these ROUTER_* variables, which are not keys.
_SERVICE_LINK = re.compile(
    r"^ROUTER_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$"
)


def is_service_link(name: str) -> bool:
    """True for a variable Kubernetes injects for a Service named ``router``."""
    return _SERVICE_LINK.match(name) is not None


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the TOML file (if any) and ``ROUTER_*`` variables (which win) into ``Settings``."""
    values: dict[str, Any] = read_config_file(path) if path is not None else {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and not is_service_link(name):
            key = name[len(ENV_PREFIX) :].lower()
            if key not in _ANNOTATIONS:
                raise ConfigError(name, "unknown configuration key in the environment")
            lone = _LONE_SURROGATE.search(raw)
            if lone is not None:
                # Python reads a byte that is not UTF-8 as a lone surrogate, which no subject,
                # header or URL can carry (a decide subject holding one was never subscribed).
                code = ord(lone.group())
                what = f"a byte 0x{code - 0xDC00:02x}" if code >= 0xDC80 else "a lone surrogate"
                raise ConfigError(name, f"is not UTF-8 ({what})")
            values[key] = raw
    return build_settings(values)
