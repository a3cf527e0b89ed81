"""JetStream and key-value over one nats-py client: streams, consumers, pull subscriptions, buckets.

``nats_transport.NatsConnection`` hands its JetStream operations to the ``NatsJetStream`` it
owns, so the connection module keeps to connecting, core pub/sub and closing. Failures are
translated by ``nats_errors.translate``; only nats-py's "not found" and "wrong last sequence"
answers are read here, as the None or False that the ``Connection`` protocol promises. A
publish is a request made by the client (``OrderedClient.ack_request``) and its PubAck read
here (``read_pub_ack``), as ``JetStreamContext.publish`` does, more cheaply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.kv import KeyValue

from natsrouter.errors import NoRespondersError
from natsrouter.link.nats_client import OrderedClient
from natsrouter.link.nats_errors import translate
from natsrouter.link.outcome import PubAck
from natsrouter.link.transport import (
    AckKind,
    BucketSpec,
    ConsumerSpec,
    JsMessage,
    JsMetadata,
    KvEntry,
    PullConsumer,
    StreamInfo,
    StreamSpec,
)

# How long stopping a pull consumer may take before it is abandoned (like closing a
# connection: a black-holed socket must not hold the link up).
_STOP_TIMEOUT_S = 1.0


def _to_js(msg: Msg) -> JsMessage:
    meta = msg.metadata
    seq = meta.sequence
    return JsMessage(
        msg.subject,
        msg.data,
        msg.headers,
        msg.reply or None,
        JsMetadata(
            meta.stream,
            meta.consumer,
            seq.stream,
            seq.consumer,
            meta.num_delivered,
            meta.num_pending,
        ),
    )


class _PullConsumer:
    def __init__(self, psub: Any) -> None:
        self._psub = psub

    async def fetch(self, batch: int, timeout_s: float) -> list[JsMessage]:
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout_s)
        except TimeoutError:  # nats-py raises both its own and the builtin class here
            return []
        except Exception as exc:
            raise translate(exc) from exc
        return [_to_js(m) for m in msgs]

    async def stop(self) -> None:
        # Unsubscribing the inbox also ends any pull request still open on the server, so
        # it cannot capture messages for a reader that is gone.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._psub.unsubscribe(), _STOP_TIMEOUT_S)


class NatsJetStream:
    """The JetStream API of one connection: its context and the key-value handles it opened."""

    def __init__(self, nc: OrderedClient) -> None:
        self._nc = nc
        self._js: Any = None
        #: Key-value handles by bucket, made once per connection (each costs a round trip).
        self._buckets: dict[str, KeyValue] = {}

    def bind(self, api_timeout_s: float) -> None:
        """Make the JetStream context, once the client is connected."""
        self._js = self._nc.jetstream(timeout=api_timeout_s)

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck:
        # JetStreamContext.publish is a request and a reading of its answer; made here with
        # the client's own request, and the answer read by read_pub_ack (the same result).
        try:
            try:
                msg = await self._nc.ack_request(
                    subject, payload, timeout_s, dict(headers) if headers else None
                )
            except nats.errors.NoRespondersError:
                raise nats.js.errors.NoStreamResponseError from None  # as nats-py's publish
            return read_pub_ack(msg.data)
        except Exception as exc:
            raise translate(exc) from exc

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer:
        config = ConsumerConfig(
            durable_name=spec.durable,
            filter_subject=spec.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=spec.max_deliver,
            ack_wait=spec.ack_wait_ms / 1000,
        )
        try:
            psub = await self._js.pull_subscribe(
                spec.filter_subject,
                durable=spec.durable,
                # Empty: nats-py finds the stream that holds the subject.
                stream=spec.stream or None,
                config=config,
            )
        except Exception as exc:
            raise translate(exc) from exc
        return _PullConsumer(psub)

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        try:
            await self._js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            raise translate(exc) from exc
        else:
            return False
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            duplicate_window=spec.duplicate_window_s,
            max_age=spec.max_age_s or None,
            num_replicas=spec.replicas,
        )
        try:
            await self._js.add_stream(config)
        except Exception as exc:
            raise translate(exc) from exc
        return True

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        # Two JetStream API calls: which stream holds the subject, then its configuration.
        js = self._nc.jetstream(timeout=timeout_s)
        try:
            name = await js.find_stream_name_by_subject(subject)
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return StreamInfo(name, float(info.config.duplicate_window or 0.0))

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        try:
            self._buckets[spec.name] = await self._js.key_value(spec.name)
        except nats.js.errors.BucketNotFoundError:
            pass
        except Exception as exc:
            raise translate(exc) from exc
        else:
            return False
        config = KeyValueConfig(
            bucket=spec.name, history=1, ttl=spec.ttl_s or None, replicas=spec.replicas
        )
        try:
            self._buckets[spec.name] = await self._js.create_key_value(config)
        except Exception as exc:
            raise translate(exc) from exc
        return True

    async def _bucket(self, name: str) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is None:  # declared after this connection was made, or made elsewhere
            try:
                kv = self._buckets[name] = await self._js.key_value(name)
            except nats.js.errors.BucketNotFoundError as exc:
                raise NoRespondersError(f"no key-value bucket {name!r}") from exc
            except Exception as exc:
                raise translate(exc) from exc
        return kv

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        kv = await self._bucket(bucket)
        try:
            entry = await asyncio.wait_for(kv.get(key), timeout_s)
        except nats.js.errors.KeyNotFoundError:  # also a deleted or purged key
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return KvEntry(key, entry.value or b"", entry.revision or 0)

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        kv = await self._bucket(bucket)
        try:
            revision: int = await asyncio.wait_for(kv.put(key, value), timeout_s)
        except Exception as exc:
            raise translate(exc) from exc
        return revision

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        kv = await self._bucket(bucket)
        try:
            revision: int = await asyncio.wait_for(kv.create(key, value), timeout_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # another writer's value is there: it won
        except nats.js.errors.KeyNotFoundError:
            # Refused as a wrong last sequence, then nats-py's check for a deleted key did
            # not find it yet (a clustered write being applied): another writer won too.
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return revision

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        kv = await self._bucket(bucket)
        try:
            new: int = await asyncio.wait_for(kv.update(key, value, last=revision), timeout_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # another write came first
        except Exception as exc:
            raise translate(exc) from exc
        return new


#: The JSON scanner json.loads uses, called directly (its own frames and checks are about
#: three quarters of the time of reading a PubAck).
_scan: Callable[[str, int], tuple[Any, int]]
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def read_pub_ack(data: bytes) -> PubAck:
    """The PubAck in a JetStream publish answer, as ``JetStreamContext.publish`` reads it.

    The server's usual answer (UTF-8, one JSON object with ``stream`` and ``seq`` and no
    ``error``, nothing around it) is read without nats-py's general reading of a PubAck
    (``dataclasses.fields`` and a keyword call per message); anything else goes through
    nats-py's own steps and raises what they raise (tests/unit/test_pub_ack_reading.py).
    """
    try:
        text = data.decode()
        resp, end = _scan(text, 0)
    except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError is a ValueError
        resp = end = None
    if (
        type(resp) is dict
        and end == len(text)
        and "error" not in resp
        and "stream" in resp
        and "seq" in resp
    ):
        return PubAck(resp["stream"], resp["seq"], bool(resp.get("duplicate")))
    resp = json.loads(data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])
    ack = nats.js.api.PubAck.from_response(resp)
    return PubAck(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))


def ack_payload(kind: AckKind, delay_ms: int | None) -> bytes:
    """The JetStream acknowledgement protocol body."""
    if kind is AckKind.ACK:
        return b"+ACK"
    if kind is AckKind.TERM:
        return b"+TERM"
    if kind is AckKind.IN_PROGRESS:
        return b"+WPI"
    if delay_ms:
        return b"-NAK " + json.dumps({"delay": delay_ms * 1_000_000}).encode()
    return b"-NAK"
