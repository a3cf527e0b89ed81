"""TLS (server-verified and mutual) and NKey authentication against a real nats-server."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nkeys
import pytest
import trustme

from natsrouter.embedded import NatsServer
from natsrouter.link import ConnectionState, Outcome
from natsrouter.link.outcome import PubAck
from natsrouter.link.transport import StreamSpec
from tests.conftest import LinkFactory
from tests.helpers.jwt_auth import JwtAuth
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        client = self.ca.issue_cert("natsrouter@example.test")
        self.ca_file = tmp / "ca.pem"
        self.server_cert, self.server_key = tmp / "server.pem", tmp / "server.key"
        self.client_cert, self.client_key = tmp / "client.pem", tmp / "client.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_server(tmp: Path, pki: Pki, *, mutual: bool) -> NatsServer:
    args = ["--tls", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key)]
    if mutual:
        args += ["--tlsverify", "--tlscacert", str(pki.ca_file)]
    return NatsServer(store_dir=tmp / "js", extra_args=args)


@pytest.fixture
def start() -> Iterator[Callable[[NatsServer], NatsServer]]:
    """Start a server for this test; every one started is killed at teardown."""
    started: list[NatsServer] = []

    def run(server: NatsServer) -> NatsServer:
        started.append(server)
        server.start()
        return server

    try:
        yield run
    finally:
        for server in started:
            server.kill()


async def test_tls_with_the_ca_connects_and_publishes(
    tmp_path: Path, pki: Pki, make_link: LinkFactory, start: Callable[[NatsServer], NatsServer]
) -> None:
    """tls:// with the server's CA: connected, and a JetStream publish is stored."""
    server = start(tls_server(tmp_path, pki, mutual=False))
    url = f"tls://127.0.0.1:{server.port}"
    link = await make_link([url], nats_tls_ca_file=str(pki.ca_file))
    assert await link.wait_connected(5)
    await link.declare_stream(StreamSpec("TLS", ("tls.>",)))
    result = await link.publish_with_ack("tls.x", b"over tls")
    assert (result.outcome, result.pub_ack) == (Outcome.SENT, PubAck("TLS", 1))
    # Read back by a separate client over TLS: the server stored it.
    nc = await nats.connect(url, tls=ssl.create_default_context(cafile=str(pki.ca_file)))
    try:
        stored = await nc.jetstream().get_msg("TLS", 1)
    finally:
        await nc.close()
    assert (stored.subject, stored.data) == ("tls.x", b"over tls")


async def test_tls_without_the_ca_is_refused_and_retried(
    tmp_path: Path, pki: Pki, make_link: LinkFactory, start: Callable[[NatsServer], NatsServer]
) -> None:
    """An untrusted server certificate fails each attempt; the link keeps backing off."""
    server = start(tls_server(tmp_path, pki, mutual=False))
    link = await make_link([f"tls://127.0.0.1:{server.port}"], nats_reconnect_attempts=0)
    await wait_for(
        lambda: metric(link, "router_nats_reconnect_failures_total", reason="auth") >= 2, 5
    )
    assert metric(link, "router_nats_connection_failures_total", reason="auth") >= 3
    assert link.state is ConnectionState.CONNECTING


async def test_mutual_tls_needs_the_client_certificate(
    tmp_path: Path, pki: Pki, make_link: LinkFactory, start: Callable[[NatsServer], NatsServer]
) -> None:
    """--tlsverify: with the client certificate it connects; without, it does not."""
    server = start(tls_server(tmp_path, pki, mutual=True))
    url = f"tls://127.0.0.1:{server.port}"
    good = await make_link(
        [url],
        nats_tls_ca_file=str(pki.ca_file),
        nats_tls_cert_file=str(pki.client_cert),
        nats_tls_key_file=str(pki.client_key),
    )
    assert await good.wait_connected(5)
    bare = await make_link([url], nats_tls_ca_file=str(pki.ca_file))
    await wait_for(lambda: metric(bare, "router_nats_reconnect_attempts_total") >= 2, 5)
    assert not bare.ready


async def test_nkey_seed_file_authenticates(
    tmp_path: Path, make_link: LinkFactory, start: Callable[[NatsServer], NatsServer]
) -> None:
    """A user NKey: the right seed connects, another seed is reason=auth."""

    def new_user() -> tuple[bytes, str]:
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()

    seed, public = new_user()
    other_seed, _ = new_user()
    conf = tmp_path / "nkey.conf"
    conf.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    (tmp_path / "user.nk").write_bytes(seed)
    (tmp_path / "other.nk").write_bytes(other_seed)
    server = start(NatsServer(store_dir=tmp_path / "js", extra_args=["-c", str(conf)]))
    good = await make_link([server.url], nats_nkey_seed_file=str(tmp_path / "user.nk"))
    assert await good.wait_connected(5)
    bad = await make_link([server.url], nats_nkey_seed_file=str(tmp_path / "other.nk"))
    await wait_for(
        lambda: metric(bad, "router_nats_connection_failures_total", reason="auth") >= 1, 5
    )
    assert not bad.ready


async def test_creds_file_authenticates(
    tmp_path: Path, make_link: LinkFactory, start: Callable[[NatsServer], NatsServer]
) -> None:
    """A JWT creds file signed by a trusted account connects; an unknown account's is auth."""
    auth = JwtAuth(tmp_path)
    server = start(NatsServer(jetstream=False, extra_args=["-c", str(auth.server_conf)]))
    good = await make_link([server.url], nats_creds_file=str(auth.user_creds))
    assert await good.wait_connected(5)
    assert (await good.publish("creds.x", b"hi")).outcome is Outcome.SENT
    bad = await make_link([server.url], nats_creds_file=str(auth.stranger_creds))
    await wait_for(
        lambda: metric(bad, "router_nats_connection_failures_total", reason="auth") >= 1, 5
    )
    assert not bad.ready
