"""nats-py's client as the link uses it: PINGs in order, unreadable messages dropped, a
core publish without coroutines, messages handed from the parser straight to a plain-function
handler, and a cheaper request for JetStream publishes.

Each fix is a subclass of nats-py 2.16's own classes (``Client``, its protocol ``Parser``)
overriding as little as it can; ``nats_transport`` makes one per connection, hands out
``publish_now`` as the connection's ``fast_publish``, binds a direct subscription through
``subscribe_direct`` and ``nats_jetstream`` publishes through ``ack_request``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any

import nats.errors
import nats.js.api
from nats.aio.client import (
    _HEADER_KEY_RE,
    _HEADER_VALUE_NEWLINES,
    _SUBJECT_INVALID_RE,
    NO_RESPONDERS_STATUS,
    PING_PROTO,
    Client,
    _validate_subject,
)
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.parser import Parser

from natsrouter.link.transport import DirectHandler, HandlerFailed, InboundMessage

#: The functions a message's subject, reply subject and headers are decoded in: nats-py's
#: ``_process_msg`` and, for a direct subscription, ``OrderedClient``'s own (set below).
_PROCESS_MSG = {Client._process_msg.__code__}


def _raised_in_process_msg(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a message's decoding (its traceback passes there)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in _PROCESS_MSG:
            return True
        tb = tb.tb_next
    return False


class _GuardedParser(Parser):
    """nats-py's protocol parser, dropping a message nats-py cannot read.

    nats-server passes a subject, reply subject or header block on as the publisher wrote
    it, and nats-py decodes them in ``_process_msg``, inside this parser's ``parse``, inside
    its read loop: subjects and status lines as strict UTF-8 (``UnicodeDecodeError``), and a
    header block of no more than its version line indexes past its end (``IndexError``).
    Raised there, the loop ended and the connection stayed open, unread. The message is
    dropped before it reaches a subscription (like a message a full buffer drops), its
    subject reported, and the rest of what was read is parsed at once. Guarded here, once
    per read, rather than around ``_process_msg``: that cost a coroutine more per message
    (docs/performance.md).
    """

    def __init__(self, nc: Client, on_unreadable: Callable[[str], None] | None) -> None:
        super().__init__(nc)
        self._on_unreadable = on_unreadable

    async def parse(self, data: bytes = b"") -> None:
        while True:
            try:
                await super().parse(data)
                return
            except Exception as exc:  # whatever decoding a message raises
                # Only a message handed to _process_msg: the parser has already consumed it
                # and reset its state, so parsing goes on after it. Anything else is raised
                # as before. (A direct subscription's handler never raises here: what it
                # raises goes to its on_failure.)
                if not _raised_in_process_msg(exc):
                    raise
                if self._on_unreadable is not None:
                    subject: bytes = self.msg_arg["subject"]
                    self._on_unreadable(subject.decode("utf-8", "backslashreplace"))
                data = b""


STATUS_HEADER = nats.js.api.Header.STATUS

# nats-py's client states, read once per publish instead of through its properties.
_CONNECTED, _CLOSED = Client.CONNECTED, Client.CLOSED
_DRAINING_SUBS, _DRAINING_PUBS = Client.DRAINING_SUBS, Client.DRAINING_PUBS


def _nats_header_block(headers: Mapping[str, str]) -> bytes:
    """The headers as nats-py 2.16 writes them: its version line, each name stripped (an
    empty one left out, one outside its token characters refused with ``BadHeaderError``),
    each value stripped with its line breaks turned to spaces, then the blank line."""
    block = bytearray(b"NATS/1.0\r\n")
    for name, value in headers.items():
        name = name.strip()
        if not name:
            continue
        if not _HEADER_KEY_RE.fullmatch(name):
            raise nats.errors.BadHeaderError(name)
        block += b"%b: %b\r\n" % (
            name.encode(),
            value.strip().translate(_HEADER_VALUE_NEWLINES).encode(),
        )
    block += b"\r\n"
    return bytes(block)


#: Each header name already written, as given, to the text it starts its line with (``""``:
#: a name left out). The Router publishes a handful of names, so the table stays small; it
#: is bounded for a caller that would publish ever new ones.
_NAME_LINES: dict[str, str] = {}
_NAME_LINES_MAX = 64


def _name_line(name: str) -> str:
    """``"name: "`` for a name nats-py keeps (stripped), ``""`` for one it leaves out."""
    key = name.strip()
    if key and not _HEADER_KEY_RE.fullmatch(key):
        raise nats.errors.BadHeaderError(key)
    line = f"{key}: " if key else ""
    if type(name) is str and len(_NAME_LINES) < _NAME_LINES_MAX:
        _NAME_LINES[name] = line
    return line


def _header_block(headers: Mapping[str, str]) -> bytes:
    """``_nats_header_block(headers)``: the same bytes, or the same error.

    Written as one text and encoded once, each name checked once per process rather than
    on every publish, each value translated only when it holds a line break: about a third
    of the time (tests/unit/test_header_block.py proves the bytes equal nats-py's own). A
    refusal of any kind (a bad name, a value that is not text or not UTF-8) is made again by
    ``_nats_header_block``, so the error is nats-py's own, raised at the same header.
    """
    lines = _NAME_LINES
    try:
        block = "NATS/1.0\r\n"
        for name, value in headers.items():
            line = lines.get(name)
            if line is None:
                line = _name_line(name)
            if line:
                value = value.strip()
                if "\r" in value or "\n" in value:
                    value = value.translate(_HEADER_VALUE_NEWLINES)
                block += f"{line}{value}\r\n"
        return f"{block}\r\n".encode()
    except Exception:  # noqa: BLE001 - the error is raised again, as nats-py raises it
        return _nats_header_block(headers)


def _time_out(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


class _Done:
    """An awaitable that is already done: what ``_process_msg`` hands the parser to await
    after delivering a message itself, without a coroutine made per message."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE = _Done()


class OrderedClient(Client):
    """nats-py's client with a PING that waits its turn behind the commands already buffered.

    nats-py 2.16 writes a flush's PING straight to the socket, ahead of publishes, SUBs and
    UNSUBs still in its buffer, so the PONG proves nothing about them: a subscription looked
    bound before the server had it, and a drain could end before the server had the UNSUB
    (requests delivered meanwhile were dropped unanswered). Appended to the buffer instead,
    the PING reaches the server after everything sent before it (tests/integration/
    test_wire_order.py). Not connected (the handshake), nats-py's own path is kept.

    A PONG that comes after its ping timed out is taken and dropped (``_process_pong``), and
    so is a message nats-py cannot read (``_GuardedParser``): either once ended the read loop.
    Should anything else end it, ``reading`` says so and the link's ping fails as lost.

    ``publish_now`` is nats-py's core publish as a plain function (the link's hot path), and
    ``ack_request`` its request for JetStream publishes, made more cheaply.

    A direct subscription (``subscribe_direct``) has its messages handed from the parser to
    its plain-function handler (``_process_msg``), without nats-py's ``Msg``, queue, task and
    callback coroutine per message.
    """

    def __init__(self, on_unreadable: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._ps = _GuardedParser(self, on_unreadable)
        #: ack_request's tokens, and its reply prefix as text (for the prefix it was made of).
        self._tokens = itertools.count()
        self._reply_prefix_of: bytearray | None = None
        self._reply_prefix = ""
        #: The resolved future publish_now hands the flusher to wake it (made on first use).
        self._woken: asyncio.Future[None] | None = None
        #: Direct subscriptions by sid: their handler and what it raises goes to. A sid leaves
        #: with nats-py's own subscription (``_remove_sub``): after its UNSUB, or after the
        #: round trip behind the UNSUB when drained.
        self._direct: dict[int, tuple[DirectHandler, HandlerFailed]] = {}

    @property
    def reading(self) -> bool:
        """Whether the read loop runs: without it nats-py's flush passes with no round trip."""
        task = self._reading_task
        return task is not None and not task.done()

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        if not self.is_connected:
            await super()._send_ping(future)
            return
        self._pongs.append(future if future is not None else asyncio.Future())
        self._pending.append(PING_PROTO)
        self._pending_data_size += len(PING_PROTO)
        await self._flush_pending()

    async def subscribe_direct(
        self, subject: str, queue: str, handler: DirectHandler, on_failure: HandlerFailed
    ) -> Subscription:
        """A core subscription whose messages go from the parser straight to ``handler``.

        ``handler`` is a plain function (it never waits): each message becomes an
        ``InboundMessage`` in ``_process_msg`` and is handed to it there, in the read loop; what
        it raises goes to ``on_failure`` and delivery goes on. nats-py's subscription is made
        as usual (sid, SUB, ``unsubscribe``, ``drain``, resent on nothing: the link makes a new
        client per connection), with a callback doing the same delivery the slow way: it only
        sees a message parsed before the sid was in the table. nats-py's pending limits
        (slow consumer) do not apply: nothing is buffered.
        """

        async def deliver(msg: Msg) -> None:
            try:
                handler(InboundMessage(msg.subject, msg.data, msg.headers, msg.reply or None))
            except Exception as exc:  # noqa: BLE001 - a handler bug must not end the delivery
                on_failure(exc)

        sub = await self.subscribe(subject, queue=queue, cb=deliver)
        self._direct[sub._id] = (handler, on_failure)
        return sub

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    def _process_msg(  # type: ignore[override]
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> Awaitable[None]:
        """nats-py's ``_process_msg`` for every sid but a direct one: for that one, the
        message delivered here, and an awaitable already done handed back to the parser.

        Not a coroutine: the parser awaits what it returns, and for other sids that is
        nats-py's own coroutine, without a frame of ours around it. A subject or reply that
        is not UTF-8 raises ``UnicodeDecodeError`` here, before the handler, as nats-py's does
        (``_GuardedParser`` drops the message); what the handler raises goes to its
        ``on_failure``, never to the parser.
        """
        direct = self._direct.get(sid)
        if direct is None:
            return Client._process_msg(self, sid, subject, reply, data, headers)
        if headers:
            # nats-py's own header parsing (a status line included) is a coroutine.
            return self._deliver_with_headers(direct, subject, reply, data, headers)
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        msg = InboundMessage(subject.decode(), data, None, reply.decode() or None)
        try:
            direct[0](msg)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not end the read loop
            direct[1](exc)
        return _DONE

    async def _deliver_with_headers(
        self,
        direct: tuple[DirectHandler, HandlerFailed],
        subject: bytes,
        reply: bytes,
        data: bytes,
        headers: bytes,
    ) -> None:
        """A direct subscription's message with headers, parsed by nats-py's own
        ``_process_headers``, as every subscription's."""
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        parsed = await self._process_headers(headers)
        msg = InboundMessage(subject.decode(), data, parsed, reply.decode() or None)
        try:
            direct[0](msg)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not end the read loop
            direct[1](exc)

    def publish_now(
        self,
        subject: str,
        payload: bytes,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Coroutine[Any, Any, None] | None:
        """nats-py's ``publish``, done without a coroutine: None once the command is buffered.

        The same steps in the same order as ``Client.publish`` (nats-py 2.16) and its
        ``_send_publish`` / ``_send_command``, with the same exceptions: the subject and reply
        checked (``BadSubjectError``) unless validation is skipped; ``ConnectionClosedError``
        when closed, ``ConnectionDrainingError`` while draining publishes;
        ``OutboundBufferLimitError`` when not connected and the payload does not fit the
        buffer; ``MaxPayloadError``; ``BadSubjectError`` for an empty subject; the headers as
        ``_header_block`` writes them; the stats; the command appended to the buffer; the
        flusher woken when its queue is empty. None of those steps ever waits, so the three
        coroutines nats-py runs them in cost a frame each for nothing (docs/performance.md).

        What may wait is returned, for the caller to await before the publish counts as done:
        nats-py's forced flush once the buffer has passed ``max_pending_size`` (its
        backpressure), or its inline write when its flusher task is gone.
        """
        if not self._skip_subject_validation:
            # nats-py's _validate_subject for publishes (not strict), written out.
            if not subject or _SUBJECT_INVALID_RE.search(subject):
                raise nats.errors.BadSubjectError
            if reply and _SUBJECT_INVALID_RE.search(reply):
                raise nats.errors.BadSubjectError
        status = self._status
        if status == _CLOSED:
            raise nats.errors.ConnectionClosedError
        if status == _DRAINING_PUBS:
            raise nats.errors.ConnectionDrainingError
        size = len(payload)
        connected = status in (_CONNECTED, _DRAINING_SUBS)
        if not connected:
            limit = self._max_pending_size
            if limit <= 0 or size + self._pending_data_size > limit:
                raise nats.errors.OutboundBufferLimitError
        if size > self._max_payload:
            raise nats.errors.MaxPayloadError
        if subject == "":
            raise nats.errors.BadSubjectError
        if headers is None:
            command = b"PUB %b %b %d\r\n%b\r\n" % (subject.encode(), reply.encode(), size, payload)
        else:
            block = _header_block(headers)
            command = b"HPUB %b %b %d %d\r\n%b%b\r\n" % (
                subject.encode(),
                reply.encode(),
                len(block),
                len(block) + size,
                block,
                payload,
            )
        stats = self.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._pending.append(command)
        self._pending_data_size += len(command)
        if 0 < self._max_pending_size < self._pending_data_size:
            return self._flush_forced()
        queue = self._flush_queue
        if queue is not None and queue.empty() and connected:
            # nats-py's _flush_pending without its force: hand the flusher a future. Nothing
            # awaits that one and the flusher only resolves it if it is not done, so one
            # already resolved serves every time, without a future made per wake-up.
            flusher = self._flusher_task
            if flusher is None or flusher.done():
                return self._flush_pending()
            woken = self._woken
            if woken is None:
                woken = self._woken = asyncio.get_running_loop().create_future()
                woken.set_result(None)
            queue.put_nowait(woken)
        return None

    async def _flush_forced(self) -> None:
        """What nats-py does after buffering a publish that took the buffer past its limit:
        a flush awaited (bounded by its flush timeout), then the flusher woken if idle."""
        await self._flush_pending(force_flush=True)
        queue = self._flush_queue
        if queue is not None and queue.empty():
            await self._flush_pending()

    async def ack_request(
        self, subject: str, payload: bytes, timeout_s: float, headers: dict[str, str] | None
    ) -> Msg:
        """``request(subject, payload, timeout=timeout_s, headers=headers)``, made more cheaply.

        The same steps on nats-py's own reply subscription and response map: the subject
        checked first, ``ConnectionDrainingError`` while draining, the same publish, nats-py's
        ``TimeoutError`` when no answer comes within ``timeout_s`` of the publish, and
        ``NoRespondersError`` for a 503 status. Without a ``secrets`` token per request (the
        token is a counter, unique on this client and never as long as nats-py's), and with
        one timer instead of ``asyncio.wait_for`` (a coroutine, a future and callbacks more):
        about 4 µs per JetStream publish (tests/integration/test_publish_ack.py); and the
        publish made with ``publish_now``, without nats-py's three coroutines.
        """
        if not self._skip_subject_validation:
            _validate_subject(subject)
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        prefix = self._resp_sub_prefix
        if not prefix:
            await self._init_request_sub()
            prefix = self._resp_sub_prefix
            assert prefix is not None
        if prefix is not self._reply_prefix_of:
            self._reply_prefix_of, self._reply_prefix = prefix, prefix.decode()
        token = f"L{next(self._tokens)}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        responses = self._resp_map
        responses[token] = future
        try:
            waiting = self.publish_now(subject, payload, self._reply_prefix + token, headers)
            if waiting is not None:
                await waiting
            timer = loop.call_later(timeout_s, _time_out, future)
            try:
                msg = await future
            finally:
                timer.cancel()
        finally:
            responses.pop(token, None)
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
            raise nats.errors.NoRespondersError
        return msg

    async def _process_pong(self) -> None:
        # The k-th PONG answers the k-th PING, so a PONG always takes the oldest future. A
        # ping that timed out left its future there cancelled, and nats-py's set_result on it
        # raised InvalidStateError out of the read loop, which stopped reading for good.
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


_PROCESS_MSG.update(
    (OrderedClient._process_msg.__code__, OrderedClient._deliver_with_headers.__code__)
)
