"""A fault limited to a subject pattern, set over /admin/faults, on a link to a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import Link, Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.integration.test_http import Api, _serve

pytestmark = pytest.mark.integration


@pytest.fixture
async def link(nats_server: NatsServer, make_link: LinkFactory) -> Link:
    await create_stream(nats_server.url, "SLOW", ["slow.>"])
    await create_stream(nats_server.url, "FAST", ["fast.>"])
    link = await make_link([nats_server.url], nats_fault_injection_enabled=True)
    assert await link.wait_connected(5)
    return link


@pytest.fixture
async def api(link: Link) -> AsyncIterator[Api]:
    async for api in _serve(link, fault_admin=True):
        yield api


async def test_a_fault_on_one_pattern_spares_the_other_subjects(
    nats_server: NatsServer, link: Link, api: Api
) -> None:
    """error(server_error) on slow.>: slow.a fails with that reason, fast.a is stored."""
    fault = {"kind": "error", "reason": "server_error", "subject": "slow.>"}
    status, body = await api.call(
        "POST", "/admin/faults", {"target": "publish_with_ack", "fault": fault}
    )
    assert status == 200
    assert body["faults"]["publish_with_ack"]["subject"] == "slow.>"
    slow = await link.publish_with_ack("slow.a", b"s")
    fast = await link.publish_with_ack("fast.a", b"f")
    assert (slow.outcome, slow.reason) == (Outcome.FAILED, Reason.SERVER_ERROR)
    assert fast.outcome is Outcome.SENT
    assert [m.data for m in await stored_messages(nats_server.url, "FAST")] == [b"f"]
    assert await stored_messages(nats_server.url, "SLOW") == []
    assert link.status()["faults"]["publish_with_ack"]["description"] == (
        "error(server_error) on slow.>"
    )


async def test_a_cleared_subject_fault_lets_the_subject_through(
    nats_server: NatsServer, link: Link, api: Api
) -> None:
    """DELETE of the target: slow.a is stored again."""
    fault = {"kind": "timeout", "subject": "slow.*"}
    await api.call("POST", "/admin/faults", {"target": "publish_with_ack", "fault": fault})
    assert (await api.call("DELETE", "/admin/faults/publish_with_ack"))[0] == 200
    assert (await link.publish_with_ack("slow.a", b"s")).outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("target", "subject"), [("connect", "slow.>"), ("publish", "slow.>.x"), ("request", 3)]
)
async def test_a_bad_subject_is_answered_400_naming_the_field(
    api: Api, target: str, subject: object
) -> None:
    """A subject on a subjectless target, a bad pattern, a non-string: 400, fault.subject."""
    status, body = await api.call(
        "POST",
        "/admin/faults",
        {"target": target, "fault": {"kind": "timeout", "subject": subject}},
    )
    assert (status, body["error"]["field"]) == (400, "fault.subject")
    assert (await api.get("/admin/faults"))[1] == {"faults": {}}
