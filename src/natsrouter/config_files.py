"""The files configuration names: ``--config`` itself, and the TLS and credential files.

Each is checked when the configuration is loaded, so ``natsrouter run`` and ``check-config``
stop with a ``ConfigError`` naming the key (exit 2), never a traceback or, for an encrypted
key, a passphrase prompt that would block start-up.
"""

from __future__ import annotations

import ssl
import tomllib
from pathlib import Path
from typing import Any

from natsrouter.errors import ConfigError


def check_readable(key: str, path: str) -> None:
    """A file the Router will read: it exists, is a regular file and can be read now."""
    try:
        if not Path(path).is_file():
            problem = "is not a regular file" if Path(path).exists() else "no such file"
            raise ConfigError(key, f"{problem}: {path}")
        with Path(path).open("rb") as fh:
            fh.read(1)
    except (OSError, ValueError) as exc:
        raise ConfigError(key, f"cannot read {path}: {os_reason(exc)}") from None


def os_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class _PassphraseNeeded(Exception):
    """Raised by the passphrase callback: the Router never asks for one."""


def _no_passphrase() -> bytes:
    # Without a callback, OpenSSL would prompt on the terminal for an encrypted key's
    # passphrase and block start-up; raising makes the encrypted key a configuration error.
    raise _PassphraseNeeded


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext | None:
    """The client TLS context of the ``nats_tls_*_file`` keys, or None; a file that cannot be
    used is a ``ConfigError`` naming its key. Never prompts for a passphrase."""
    if not (ca or cert):
        return None
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError("nats_tls_ca_file", f"{ca} holds no usable PEM certificate") from exc
    if cert:
        try:
            ssl.create_default_context().load_verify_locations(cafile=cert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError("nats_tls_cert_file", f"{cert} holds no PEM certificate") from exc
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _PassphraseNeeded:
            raise ConfigError(
                "nats_tls_key_file", f"{key} is encrypted; give the key without a passphrase"
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                "nats_tls_key_file",
                f"{key} is not a PEM private key matching nats_tls_cert_file",
            ) from exc
    return context


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML document of ``--config``; any problem is a ``ConfigError`` on ``--config``."""
    try:
        # A FIFO or a device (/dev/stdin) would block start-up waiting for input.
        if not path.is_file():
            problem = "is not a regular file" if path.exists() else "no such file"
            raise ConfigError("--config", f"{problem}: {path}")
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {os_reason(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
