"""Settings: one frozen object, built from a TOML file and ``ROUTER_*`` environment variables.

Keys and defaults are the public contract (CONTRACT §5, docs/configuration.md). Every value
is validated when the object is built; a bad or unknown key raises ``ConfigError`` naming
the key. Only the CLI reads files and the environment; everything else receives ``Settings``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from natsrouter.errors import ConfigError

ENV_PREFIX = "ROUTER_"


class ExhaustedPolicy(StrEnum):
    """What the link does once ``nats_reconnect_attempts`` attempts have failed."""

    KEEP_RETRYING = "keep_retrying"
    FAIL_OPEN = "fail_open"
    EXIT = "exit"


class OverflowPolicy(StrEnum):
    """What a full pending queue does with one more operation."""

    DROP_OLDEST = "drop_oldest"
    REJECT_NEW = "reject_new"


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
    nats_pending_spool_path: str = _key("")
    nats_replay_max_in_flight: int = _key(100, _min(1))
    nats_request_timeout_ms: int = _key(5000, _min(1))
    nats_max_payload_size: int = _key(1024 * 1024, _min(1))
    nats_fault_injection_enabled: bool = _key(False)
    decide_subject: str = _key("beamline.router.v1.decide", _subject)
    decide_queue_group: str = _key("router-decide-group", _non_empty)
    assignment_subject: str = _key("caf.exec.assign.v1", _subject)
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
    policies_path: str = _key("policies", _non_empty)
    policies_reload_interval_ms: int = _key(2000, _min(0))
    allowed_tenants: frozenset[str] = _key(frozenset())
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
        if self.nats_password and not self.nats_user:
            raise ConfigError("nats_user", "required when nats_password is set")
        for name in (
            "nats_creds_file",
            "nats_nkey_seed_file",
            "nats_tls_ca_file",
            "nats_tls_cert_file",
            "nats_tls_key_file",
        ):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(name, f"no such file: {path}")

    @property
    def embedded(self) -> bool:
        """True when no server is configured and `natsrouter run` starts its own."""
        return not self.nats_url


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


def parse_server_list(key: str, value: str | list[Any]) -> tuple[str, ...]:
    """Parse ``nats_url``: a comma-separated string (or TOML list) of server URLs."""
    items = value.split(",") if isinstance(value, str) else value
    servers: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise ConfigError(key, f"expected server URLs as strings, got {raw!r}")
        url = raw.strip()
        if not url:
            continue
        if "://" not in url:
            url = f"nats://{url}"
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(key, f"bad port in {redact_url(url)}") from exc
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigError(
                key, f"expected nats://host:port or tls://host:port, got {redact_url(url)}"
            )
        if port is None:
            url = url.rstrip("/") + ":4222" if parts.path in ("", "/") else url
        servers.append(url)
    return tuple(servers)


def redact_url(url: str) -> str:
    """Hide URL userinfo (user, password, token): ``nats://***@host:4222``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Turn one raw value (a TOML value or an environment string) into the key's type."""
    from_env = isinstance(value, str)
    if annotation == "tuple[str, ...]":
        return parse_server_list(key, value)
    if annotation == "frozenset[str]":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(key, f"expected a comma-separated string or a list, got {value!r}")
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
        raise ConfigError(key, f"expected a string, got {value!r}")
    enum_type = {
        cls.__name__: cls for cls in (ExhaustedPolicy, OverflowPolicy, LogFormat, LogLevel)
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
    for key, raw in values.items():
        if key not in _ANNOTATIONS:
            raise ConfigError(key, "unknown configuration key")
        parsed[key] = _coerce(key, _ANNOTATIONS[key], raw)
    return Settings(**parsed)


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the TOML file (if any) and ``ROUTER_*`` variables (which win) into ``Settings``."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError("--config", f"no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            if key not in _ANNOTATIONS:
                raise ConfigError(name, "unknown configuration key in the environment")
            values[key] = raw
    return build_settings(values)
