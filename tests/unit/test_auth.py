"""Bearer tokens: header parsing, matching, and which tenants a token may act for."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsrouter.auth import DecideTokens, bearer_token, load_decide_tokens, token_matches

A = "token-for-acme-0001"
STAR = "token-for-all-00002"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {A}", A),
        (f"bearer   {A} ", A),
        (f"Basic {A}", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header: str | None, token: str | None) -> None:
    """The token of a Bearer header (scheme in any case); anything else is None."""
    assert bearer_token(header) == token


def test_token_matches_only_the_same_token() -> None:
    """Equal matches; a prefix, an extension, empty or None does not."""
    assert [token_matches(t, A) for t in (A, A[:-1], A + "x", "", None)] == [
        True,
        False,
        False,
        False,
        False,
    ]


@pytest.fixture
def tokens(tmp_path: Path) -> DecideTokens:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[[token]]\ntoken = "{A}"\ntenants = ["acme"]\n'
        f'[[token]]\ntoken = "{STAR}"\ntenants = ["*"]\n'
    )
    return load_decide_tokens(str(path))


def test_each_token_acts_for_its_tenants(tokens: DecideTokens) -> None:
    """A token's own tenants, "*" for any; an unknown or missing token has none."""
    acme, star = tokens.tenants_for(A), tokens.tenants_for(STAR)
    assert acme is not None and star is not None
    assert (tokens.allows(acme, "acme"), tokens.allows(acme, "globex")) == (True, False)
    assert tokens.allows(star, "globex") is True
    assert (tokens.tenants_for(A + "x"), tokens.tenants_for(None)) == (None, None)


def test_the_tokens_never_show_in_repr(tokens: DecideTokens) -> None:
    """repr of the loaded file holds digests, not tokens."""
    assert A not in repr(tokens) and STAR not in repr(tokens)
