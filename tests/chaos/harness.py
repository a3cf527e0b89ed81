"""The chaos harness: steady load on a real Router process and on a raw link, then the books.

Two loads run side by side while a scenario breaks NATS:
- ``DecideLoad`` POSTs decide requests with ``push_assignment`` to a `natsrouter run` process
  at a steady rate; each answer says what happened to its assignment (``sent``, ``queued``...).
- ``RawLoad`` publishes with PubAck through a ``Link`` in the test process (its own spool);
  the payload is a sequence number.

``reconcile`` then reads the streams back and settles the books by identity, not by count:
every accepted message (``sent`` or ``queued``) must be stored exactly once; anything stored
that nobody accepted, and anything stored twice, is counted as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from natsrouter.link import Link
from tests.helpers.process import RouterProcess

ACCEPTED = ("sent", "queued")


@dataclass(frozen=True)
class Record:
    key: str  # assignment_id, or the raw sequence number
    outcome: str
    started: float  # monotonic
    done: float


@dataclass
class _Paced:
    """Fire ``fire(n)`` ``rate`` times a second, at most ``limit`` in flight, until stopped."""

    rate: float
    limit: int = 200
    records: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: asyncio.Task[None] | None = None
    _next: int = 0

    async def fire(self, n: int) -> Record | None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop firing and wait for every call in flight (each is bounded by its timeout)."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
            self._runner = None

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.limit)
        tasks: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()

        async def one(n: int) -> None:
            try:
                record = await self.fire(n)
                if record is not None:
                    self.records.append(record)
            except Exception as exc:  # recorded; the test asserts there are none
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                slots.release()

        while not self._stop.is_set():
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(one(self._next))
            self._next += 1
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += 1 / self.rate  # read each time: a scenario may change the rate
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up
        if tasks:
            await asyncio.gather(*tasks)

    def accepted(self) -> list[Record]:
        return [r for r in self.records if r.outcome in ACCEPTED]

    def first_sent_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first ``sent`` answer to a call made after it.

        While a replay runs, new publishes are queued behind it, so this includes the replay.
        """
        times = [r.done for r in self.records if r.outcome == "sent" and r.started >= moment]
        return round(min(times) - moment, 3) if times else None


@dataclass
class DecideLoad(_Paced):
    router: RouterProcess | None = None
    session: aiohttp.ClientSession | None = None
    prefix: str = "req"

    async def fire(self, n: int) -> Record | None:
        assert self.router is not None and self.session is not None
        body = {
            "version": "1",
            "request_id": f"{self.prefix}-{n}",
            "tenant_id": "acme",
            "task": {"type": "text", "payload": {"n": n}},
            "push_assignment": True,
        }
        started = time.monotonic()
        async with self.session.post(self.router.decide_url, json=body) as resp:
            answer = await resp.json()
        if resp.status != 200:
            raise AssertionError(f"decide answered {resp.status}: {answer}")
        assignment = answer["assignment"]
        return Record(assignment["assignment_id"], assignment["outcome"], started, time.monotonic())


@dataclass
class RawLoad(_Paced):
    link: Link | None = None
    subject: str = "chaos.raw"

    async def fire(self, n: int) -> Record | None:
        assert self.link is not None
        started = time.monotonic()
        result = await self.link.publish_with_ack(self.subject, str(n).encode())
        return Record(str(n), result.outcome.value, started, time.monotonic())


async def read_stream(url: str | list[str], stream: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every message of ``stream`` (data, headers), through an ephemeral pull consumer.

    Tried again until a minute has passed: after a cluster loses its metadata leader, making a
    consumer waits for the next one to be elected (about 10 s measured).
    """
    deadline = time.monotonic() + 60
    while True:
        try:
            return await _read_stream_once(url, stream)
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _read_stream_once(
    url: str | list[str], stream: str
) -> list[tuple[bytes, dict[str, str]]]:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        expected = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe(
            "",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        out: list[tuple[bytes, dict[str, str]]] = []
        deadline = time.monotonic() + 60
        while len(out) < expected and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1000, timeout=2)
            except TimeoutError:
                continue
            out.extend((m.data, dict(m.headers or {})) for m in msgs)
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


@dataclass(frozen=True)
class Books:
    accepted: int
    during_outage: int  # accepted as `queued`: held while NATS was away
    delivered_after: int  # of those, found in the stream afterwards
    lost: int
    duplicated: int
    phantom: int  # stored, but never accepted by anyone we asked
    refused: dict[str, int]  # outcomes other than sent/queued, by outcome

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def reconcile(records: list[Record], stored_keys: list[str]) -> Books:
    accepted = {r.key: r.outcome for r in records if r.outcome in ACCEPTED}
    stored = Counter(stored_keys)
    queued = [k for k, outcome in accepted.items() if outcome == "queued"]
    return Books(
        accepted=len(accepted),
        during_outage=len(queued),
        delivered_after=sum(1 for k in queued if stored[k] >= 1),
        lost=sum(1 for k in accepted if stored[k] == 0),
        duplicated=sum(n - 1 for n in stored.values() if n > 1),
        phantom=sum(1 for k in stored if k not in accepted),
        refused=dict(Counter(r.outcome for r in records if r.outcome not in ACCEPTED)),
    )


async def settle(
    *conditions: tuple[str, Callable[[], bool | Awaitable[bool]]], timeout_s: float = 60
) -> None:
    """Wait until every named condition holds (pending queues drained, and the like)."""
    deadline = time.monotonic() + timeout_s
    for what, condition in conditions:
        while True:
            try:
                value = condition()
                if isinstance(value, Awaitable):
                    value = await value
            except OSError:  # a process still starting, a server coming back
                value = False
            if value:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            await asyncio.sleep(0.1)


def replay_rates(router: RouterProcess) -> list[dict[str, float]]:
    """Each replay the Router logged: items sent, seconds, items per second."""
    rates = []
    started: datetime | None = None
    for line in router.lines():
        code = line.get("error_code")
        if code == "NATS_RETRY_PENDING":
            started = datetime.fromisoformat(line["ts"])
        elif code == "NATS_RETRY_COMPLETE" and started is not None:
            seconds = (datetime.fromisoformat(line["ts"]) - started).total_seconds()
            sent = line["success_count"]
            if sent:
                rates.append(
                    {
                        "sent": sent,
                        "seconds": round(seconds, 3),
                        "per_s": round(sent / max(seconds, 1e-3)),
                    }
                )
            started = None
    return rates


def decide_keys(stored: list[tuple[bytes, dict[str, str]]]) -> list[str]:
    return [headers["Nats-Msg-Id"] for _, headers in stored]


def raw_keys(stored: list[tuple[bytes, dict[str, str]]]) -> list[str]:
    return [data.decode() for data, _ in stored]
