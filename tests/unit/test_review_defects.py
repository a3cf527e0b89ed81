"""Defects found in review: precise unit tests of the parts at fault."""

from __future__ import annotations

import pytest

from natsrouter.config import build_settings
from natsrouter.errors import ConfigError
from natsrouter.link.nats_transport import ConnectOptions


@pytest.mark.parametrize(
    "url",
    [
        "nats://u:SecretPartA,SecretPartB@host:4222",  # cut in the password
        "nats://u:SecretPartA,@host:4222",  # the whole password before the comma
        "nats://SecretPartA,SecretPartB@host:4222",  # a token, whose first part looks a host
        "nats://host:4222,nats://u:SecretPartA,SecretPartB@other:4222",
    ],
)
def test_a_comma_in_url_credentials_is_refused_without_quoting_them(url: str) -> None:
    """A raw comma in a URL's credentials (the list separator) is a ConfigError naming
    nats_url that quotes no fragment of the secret, never a server made of a piece of it."""
    with pytest.raises(ConfigError) as caught:
        build_settings({"nats_url": url})
    message = str(caught.value)
    assert message.startswith("nats_url: ")
    assert "SecretPart" not in message


def test_the_connect_options_repr_shows_no_password_nor_token() -> None:
    """The options handed to the NATS client keep their secrets out of their repr."""
    settings = build_settings(
        {"nats_url": "nats://127.0.0.1:4222", "nats_user": "u", "nats_password": "SecretPartA"}
    )
    assert "SecretPartA" not in repr(ConnectOptions.from_settings(settings))
    token = build_settings({"nats_url": "nats://127.0.0.1:4222", "nats_token": "SecretPartB"})
    assert "SecretPartB" not in repr(ConnectOptions.from_settings(token))
