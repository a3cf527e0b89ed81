"""Settings: contract defaults, file and environment, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.config import (
    ExhaustedPolicy,
    OverflowPolicy,
    Settings,
    build_settings,
    load_settings,
    redact_url,
)
from natsrouter.errors import ConfigError


def test_defaults_are_the_contract_defaults() -> None:
    """Every default of CONTRACT §5 that the link uses."""
    s = Settings()
    assert s.nats_url == ()
    assert (s.nats_connect_timeout_ms, s.nats_reconnect_attempts) == (2000, 5)
    assert (s.nats_reconnect_delay_ms, s.nats_max_reconnect_delay_ms) == (500, 2000)
    assert s.nats_reconnect_jitter == 0.2
    assert s.nats_on_reconnect_exhausted is ExhaustedPolicy.KEEP_RETRYING
    assert s.nats_ping_interval_ms == 2000
    assert s.nats_fail_open_mode is False
    assert (s.nats_max_pending_operations, s.nats_max_pending_bytes) == (1000, 16777216)
    assert s.nats_pending_overflow is OverflowPolicy.DROP_OLDEST
    assert s.nats_pending_operation_timeout_ms == 0
    assert s.nats_request_timeout_ms == 5000
    assert s.nats_fault_injection_enabled is False
    assert (s.metrics_host, s.metrics_port) == ("0.0.0.0", 9001)
    assert (s.log_level.value, s.log_format.value) == ("info", "json")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    """ROUTER_<KEY> overrides the TOML value; other file values stay."""
    cfg = tmp_path / "r.toml"
    cfg.write_text('nats_reconnect_attempts = 7\nnats_pending_overflow = "reject_new"\n')
    s = load_settings(cfg, {"ROUTER_NATS_RECONNECT_ATTEMPTS": "9", "HOME": "/x"})
    assert s.nats_reconnect_attempts == 9
    assert s.nats_pending_overflow is OverflowPolicy.REJECT_NEW


def test_environment_strings_are_parsed_to_each_type() -> None:
    """Booleans, floats, enums and the server list parse from strings."""
    s = load_settings(
        None,
        {
            "ROUTER_NATS_FAIL_OPEN_MODE": "true",
            "ROUTER_NATS_RECONNECT_JITTER": "0.5",
            "ROUTER_NATS_ON_RECONNECT_EXHAUSTED": "EXIT",
            "ROUTER_NATS_URL": "nats://a:4222, b:4223,tls://c",
        },
    )
    assert s.nats_fail_open_mode is True
    assert s.nats_reconnect_jitter == 0.5
    assert s.nats_on_reconnect_exhausted is ExhaustedPolicy.EXIT
    assert s.nats_url == ("nats://a:4222", "nats://b:4223", "tls://c:4222")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"nats_reconnect_attempts": -1}, "nats_reconnect_attempts"),
        ({"nats_reconnect_attempts": 5.5}, "nats_reconnect_attempts"),
        ({"nats_reconnect_attempts": "five"}, "nats_reconnect_attempts"),
        ({"nats_reconnect_attempts": True}, "nats_reconnect_attempts"),
        ({"nats_reconnect_jitter": 1.5}, "nats_reconnect_jitter"),
        ({"nats_pending_overflow": "drop_newest"}, "nats_pending_overflow"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"nats_url": "http://x:1"}, "nats_url"),
        ({"nats_url": "nats://x:notaport"}, "nats_url"),
        ({"nats_max_reconnect_delay_ms": 100}, "nats_max_reconnect_delay_ms"),
        ({"nats_tls_cert_file": "/etc/hostname"}, "nats_tls_key_file"),
        ({"nats_creds_file": "/no/such/file"}, "nats_creds_file"),
        ({"nats_password": "x"}, "nats_user"),
        ({"nats_fail_open_mode": "maybe"}, "nats_fail_open_mode"),
        ({"no_such_key": 1}, "no_such_key"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, object], key: str) -> None:
    """Each bad value raises ConfigError whose key is the culprit."""
    with pytest.raises(ConfigError) as info:
        build_settings(values)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_unknown_environment_key_is_refused() -> None:
    """A ROUTER_ variable that is not a key stops start-up, naming the variable."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"ROUTER_NATS_URLS": "nats://x"})
    assert info.value.key == "ROUTER_NATS_URLS"


def test_an_environment_value_that_is_not_utf8_is_refused() -> None:
    """A byte that is not UTF-8 (read as a lone surrogate, which no subject or header can
    carry) stops start-up, naming the variable, instead of a Router that never subscribes."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"ROUTER_DECIDE_SUBJECT": "a.\udcff"})
    assert (info.value.key, str(info.value)) == (
        "ROUTER_DECIDE_SUBJECT",
        "ROUTER_DECIDE_SUBJECT: is not UTF-8 (a byte 0xff)",
    )


def test_bad_toml_and_missing_file_are_refused(tmp_path: Path) -> None:
    """A missing file or a TOML syntax error is a ConfigError on --config."""
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("nats_url = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, {})


def test_password_is_not_in_repr() -> None:
    """Settings' repr never shows the password or token."""
    s = build_settings({"nats_user": "u", "nats_password": "hunter2"})
    t = build_settings({"nats_token": "tok9"})
    assert "hunter2" not in repr(s)
    assert "tok9" not in repr(t)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:pw@host:4222", "nats://***@host:4222"),
        ("nats://token@host:4222", "nats://***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        ("nats://u:s3cr@tPass@host:4222", "nats://***@host:4222"),
        ("nats://u:a/b?c#d@host:4222", "nats://***@host:4222"),
        ("u:a://b@host", "***@host"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """URL userinfo is hidden, the rest kept."""
    assert redact_url(url) == shown


def test_router_defaults_are_the_contract_defaults() -> None:
    """Subjects, consumer settings, policies and HTTP defaults of CONTRACT §1 and §5."""
    s = build_settings({})
    assert (s.decide_subject, s.decide_queue_group) == (
        "beamline.router.v1.decide",
        "router-decide-group",
    )
    assert (s.assignment_subject, s.ack_subject, s.result_subject, s.usage_subject) == (
        "caf.exec.assign.v1",
        "caf.exec.assign.v1.ack",
        "caf.exec.result.v1",
        "beamline.usage.v1.metered",
    )
    assert (s.js_max_deliver, s.js_ack_wait_ms, s.js_nak_delay_ms) == (5, 30000, 1000)
    assert (s.idempotency_ttl_seconds, s.nats_max_payload_size) == (3600, 1048576)
    assert (s.policies_path, s.allowed_tenants, s.jetstream_manage_streams) == (
        "policies",
        frozenset(),
        True,
    )
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)


def test_shared_state_is_off_by_default_with_its_timings() -> None:
    """One Router needs no shared state: off, 1 s timeout, 1 s retry, 1 s breaker sync."""
    s = build_settings({})
    assert (
        s.shared_state_enabled,
        s.shared_state_timeout_ms,
        s.shared_state_retry_ms,
        s.shared_state_breaker_sync_ms,
    ) == (False, 1000, 1000, 1000)


def test_allowed_tenants_from_a_string_or_a_list() -> None:
    """Comma-separated in the environment, a list in TOML; blanks ignored."""
    from_env = load_settings(None, {"ROUTER_ALLOWED_TENANTS": " acme, globex ,,"})
    assert from_env.allowed_tenants == frozenset({"acme", "globex"})
    assert build_settings({"allowed_tenants": ["a"]}).allowed_tenants == frozenset({"a"})
    with pytest.raises(ConfigError) as caught:
        build_settings({"allowed_tenants": [1]})
    assert caught.value.key == "allowed_tenants"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"decide_subject": "a.*"}, "decide_subject"),
        ({"usage_subject": "has space"}, "usage_subject"),
        ({"result_subject": "a..b"}, "result_subject"),
        ({"ack_subject": "caf.exec.result.v1"}, "result_subject"),
        ({"js_max_deliver": 0}, "js_max_deliver"),
        ({"http_port": 70000}, "http_port"),
        ({"policies_path": " "}, "policies_path"),
        ({"jetstream_stream_replicas": 0}, "jetstream_stream_replicas"),
        ({"jetstream_stream_replicas": 7}, "jetstream_stream_replicas"),
        ({"js_publish_retry_deadline_ms": -1}, "js_publish_retry_deadline_ms"),
        ({"shared_state_enabled": "maybe"}, "shared_state_enabled"),
        ({"shared_state_timeout_ms": 0}, "shared_state_timeout_ms"),
        ({"shared_state_retry_ms": -1}, "shared_state_retry_ms"),
        ({"shared_state_breaker_sync_ms": 10}, "shared_state_breaker_sync_ms"),
    ],
)
def test_bad_router_values_name_the_key(values: dict[str, object], key: str) -> None:
    """Wildcards, blanks, equal subjects and out-of-range numbers are refused by key."""
    with pytest.raises(ConfigError) as caught:
        build_settings(values)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("url", "user", "password", "token"),
    [
        ("nats://u:s3cr@tPass@127.0.0.1:4222", "u", "s3cr@tPass", ""),
        ("nats://us%40r:Zq8@vT3:/kR5%mN@127.0.0.1:4222", "us@r", "Zq8@vT3:/kR5%mN", ""),
        ("nats://a%3Ab:p%25w?#x@127.0.0.1:4222", "a:b", "p%w?#x", ""),
        ("nats://t/o@k%en@127.0.0.1:4222", "", "", "t/o@k%en"),
        ("tls://t%3Aok@127.0.0.1:4222", "", "", "t:ok"),
        ("u:p/w@127.0.0.1:4222", "u", "p/w", ""),
    ],
)
def test_url_credentials_move_out_of_the_url(
    url: str, user: str, password: str, token: str
) -> None:
    """Userinfo (to the last @, %XX decoded) becomes nats_user/password or token; URLs are bare."""
    s = build_settings({"nats_url": url})
    assert (s.nats_user, s.nats_password, s.nats_token) == (user, password, token)
    assert s.nats_url == (
        url.split("://")[0] + "://127.0.0.1:4222" if "://" in url[:8] else "nats://127.0.0.1:4222",
    )


def test_servers_with_different_credentials_are_refused() -> None:
    """Two URLs with different userinfo: nats_url error, and no piece of either secret shown."""
    with pytest.raises(ConfigError) as info:
        build_settings({"nats_url": "nats://u:Pw-one@h1,nats://u:Pw-two@h2"})
    assert info.value.key == "nats_url"
    assert "Pw-" not in str(info.value)


def test_url_credentials_conflicting_with_a_key_are_refused() -> None:
    """A URL password that differs from nats_password is an error naming nats_url."""
    with pytest.raises(ConfigError) as info:
        build_settings({"nats_url": "nats://u:Pw-one@h1", "nats_password": "Pw-two"})
    assert str(info.value) == "nats_url: the credentials in the URL differ from nats_password"


@pytest.mark.parametrize(
    "url", ["nats://u:Pw@9x/y@h:99999", "nats://u:Pw@9x/y@[::1", "http://u:Pw@9x/y@h:4222"]
)
def test_a_bad_url_error_shows_no_credential(url: str) -> None:
    """An unusable URL is refused with a message that holds no piece of its userinfo."""
    with pytest.raises(ConfigError) as info:
        build_settings({"nats_url": url})
    assert info.value.key == "nats_url"
    assert "Pw" not in str(info.value)
    assert "9x" not in str(info.value)


@pytest.mark.parametrize("key", ["nats_password", "nats_token", "nats_user"])
def test_a_secret_of_the_wrong_type_is_not_echoed(key: str) -> None:
    """A non-string password or token is refused by its type, never by quoting the value."""
    with pytest.raises(ConfigError) as info:
        build_settings({key: 73915})
    assert str(info.value) == f"{key}: expected a string, got an integer"


# Printable characters without whitespace or commas (a comma separates servers).
_CREDENTIAL_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters=","),
    min_size=1,
    max_size=40,
)


@given(user=_CREDENTIAL_TEXT, tail=_CREDENTIAL_TEXT)
@settings(max_examples=500, deadline=None)
def test_any_user_and_password_survive_the_url_and_never_show(user: str, tail: str) -> None:
    """Percent-encoded in the URL: recovered exactly, and absent from every URL kept or shown."""
    password = "Zx9" + tail  # a prefix no other part of Settings' repr holds
    url = f"nats://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:4222"
    s = build_settings({"nats_url": url})
    assert (s.nats_user, s.nats_password, s.nats_url) == (
        user,
        password,
        ("nats://127.0.0.1:4222",),
    )
    assert redact_url(url) == "nats://***@127.0.0.1:4222"
    assert password not in repr(s)


@given(password=_CREDENTIAL_TEXT.filter(lambda p: "%" not in p))
@settings(max_examples=500, deadline=None)
def test_a_raw_password_with_separators_is_taken_whole(password: str) -> None:
    """Written as is (no %), a password holding @ : / ? # is still taken whole."""
    s = build_settings({"nats_url": f"nats://u:{password}@127.0.0.1:4222"})
    assert (s.nats_user, s.nats_password, s.nats_url) == ("u", password, ("nats://127.0.0.1:4222",))


@pytest.mark.parametrize(
    "values",
    [
        {"nats_url": "nats://u:Pw-one@h1", "nats_token": "tok-abc-987"},
        {"nats_url": "nats://tok-abc-987@h1", "nats_user": "u", "nats_password": "Pw-one"},
        {"nats_user": "u", "nats_password": "Pw-one", "nats_token": "tok-abc-987"},
        {"nats_user": "u", "nats_token": "tok-abc-987"},
    ],
    ids=["url-user-and-token-key", "url-token-and-user-keys", "keys", "user-only-and-token"],
)
def test_a_user_and_a_token_together_are_refused(values: dict[str, str]) -> None:
    """User/password and a token at once (the client would drop the token): nats_token error."""
    with pytest.raises(ConfigError) as info:
        build_settings(values)
    assert str(info.value) == (
        "nats_token: set either nats_token or nats_user/nats_password, not both"
    )
