"""Configuration mistakes are ConfigErrors naming the key or file, whatever the value or file."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from natsrouter.config import KEYS, MAX_INT, build_settings, is_service_link, load_settings
from natsrouter.errors import ConfigError

# Every kind of TOML value, and the edges of each.
TOML_VALUES: list[Any] = [
    *("", " ", "x", "nats://", "\x00", "a" * 10_000, "9" * 30, "-1", "nan"),
    *(0, -1, 1, MAX_INT + 1, 10**30, -(10**30), 1.5, float("nan"), float("inf"), -float("inf")),
    *(True, False, [], ["a"], [1], [[]], {}, {"a": 1}),
    *(datetime.datetime(2020, 1, 1), datetime.date(2020, 1, 1), datetime.time(1, 2)),
]


def test_any_toml_value_for_any_key_is_accepted_or_a_config_error() -> None:
    """Each key given each kind of TOML value: a Settings or a ConfigError naming a key."""
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    for key in KEYS:
        for value in TOML_VALUES:
            try:
                build_settings({key: value})
            except ConfigError as exc:
                # A password without a user names nats_user, the key to add; same for pairs.
                assert exc.key in KEYS, (key, value, exc)
                assert str(exc).startswith(f"{exc.key}: ")
                outcomes["refused"] += 1
            else:
                outcomes["accepted"] += 1
    assert sum(outcomes.values()) == len(KEYS) * len(TOML_VALUES)
    assert outcomes["refused"] > outcomes["accepted"]


def test_integers_are_bounded() -> None:
    """An integer beyond 2**31-1 is refused, naming the key."""
    with pytest.raises(ConfigError) as info:
        build_settings({"shutdown_timeout_ms": MAX_INT + 1})
    assert str(info.value) == f"shutdown_timeout_ms: must be <= {MAX_INT}, got {MAX_INT + 1}"


@pytest.mark.parametrize(
    "name",
    [
        "ROUTER_SERVICE_HOST",
        "ROUTER_SERVICE_PORT",
        "ROUTER_SERVICE_PORT_HTTP",
        "ROUTER_PORT",
        "ROUTER_PORT_8080_TCP",
        "ROUTER_PORT_8080_TCP_PROTO",
        "ROUTER_PORT_8080_TCP_PORT",
        "ROUTER_PORT_8080_TCP_ADDR",
        "ROUTER_PORT_9001_UDP",
    ],
)
def test_kubernetes_service_variables_are_not_keys(name: str) -> None:
    """The variables of a Service named `router` are ignored, not refused."""
    assert is_service_link(name)
    settings = load_settings(None, {name: "tcp://10.0.0.7:8080", "ROUTER_HTTP_PORT": "8081"})
    assert settings.http_port == 8081


@pytest.mark.parametrize("name", ["ROUTER_HTTP_PROT", "ROUTER_PORTS", "ROUTER_SERVICE_HOSTS"])
def test_a_misspelt_key_next_to_them_is_still_refused(name: str) -> None:
    """A ROUTER_ variable that is neither a key nor a Service variable stops start-up."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"ROUTER_SERVICE_HOST": "10.0.0.7", name: "8081"})
    assert info.value.key == name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "--config: is not a regular file: "),
        (lambda p: p.write_bytes(b'log_level = "\xff\xfe"\n'), "--config: {p} is not UTF-8 text"),
        (lambda p: None, "--config: no such file: "),
        (lambda p: os.mkfifo(p), "--config: is not a regular file: "),
    ],
    ids=["directory", "not_utf8", "missing", "fifo"],
)
def test_a_config_file_that_cannot_be_read_is_a_config_error(
    tmp_path: Path, make: Any, message: str
) -> None:
    """A directory, a FIFO (which would block), a missing or non-UTF-8 file: --config error."""
    path = tmp_path / "natsrouter.toml"
    make(path)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(info.value).startswith(message.format(p=path))


def test_a_config_path_the_os_refuses_is_a_config_error(tmp_path: Path) -> None:
    """An OS error opening --config (here: a name too long) is a --config error."""
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / ("x" * 300), {})
    assert str(info.value).startswith("--config: cannot read ")


class Pem:
    """A CA, a client certificate and key, the key encrypted, and some junk files."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("natsrouter@example.test")
        other = ca.issue_cert("other@example.test")
        self.ca, self.cert, self.key = tmp / "ca.pem", tmp / "c.pem", tmp / "k.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        leaf.cert_chain_pems[0].write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))
        self.other_key = tmp / "other.key"
        other.private_key_pem.write_to_path(str(self.other_key))
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        self.encrypted = tmp / "encrypted.key"
        self.encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"a passphrase"),
            )
        )
        self.junk = tmp / "junk.pem"
        self.junk.write_text("not a PEM file\n")


@pytest.fixture
def pem(tmp_path: Path) -> Pem:
    return Pem(tmp_path)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"ca": "junk"}, "nats_tls_ca_file: {junk} holds no usable PEM certificate"),
        ({"ca": "key"}, "nats_tls_ca_file: {key} holds no usable PEM certificate"),
        ({"cert": "junk", "key": "key"}, "nats_tls_cert_file: {junk} holds no PEM certificate"),
        (
            {"cert": "cert", "key": "encrypted"},
            "nats_tls_key_file: {encrypted} is encrypted; give the key without a passphrase",
        ),
        (
            {"cert": "cert", "key": "junk"},
            "nats_tls_key_file: {junk} is not a PEM private key matching nats_tls_cert_file",
        ),
        (
            {"cert": "cert", "key": "other_key"},
            "nats_tls_key_file: {other_key} is not a PEM private key matching nats_tls_cert_file",
        ),
        ({"ca": "dir"}, "nats_tls_ca_file: is not a regular file: {dir}"),
    ],
)
def test_a_tls_file_that_cannot_be_used_names_its_key(
    pem: Pem, tmp_path: Path, files: dict[str, str], error: str
) -> None:
    """A junk CA, certificate or key, an encrypted or mismatched key: a ConfigError, no prompt."""
    paths = {**vars(pem), "dir": tmp_path}
    values = {f"nats_tls_{role}_file": str(paths[name]) for role, name in files.items()}
    with pytest.raises(ConfigError) as info:
        build_settings(values)
    assert str(info.value) == error.format(**{k: str(v) for k, v in paths.items()})


def test_good_tls_files_are_accepted(pem: Pem) -> None:
    """A CA and a matching certificate and key pass the checks."""
    settings = build_settings(
        {
            "nats_tls_ca_file": str(pem.ca),
            "nats_tls_cert_file": str(pem.cert),
            "nats_tls_key_file": str(pem.key),
        }
    )
    assert settings.nats_tls_key_file == str(pem.key)
