"""One delivery attempt: build the body, sign it, POST it, and judge the answer.

Partners are third parties, so everything about the exchange is bounded: a total timeout (a
slow-drip answer cannot hold a slot), no redirects, at most BODY_CAP bytes of answer read and a
short excerpt kept, and every connection checked by the SSRF guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import aiohttp
import msgspec
from opentelemetry import trace
from opentelemetry.trace import Tracer

from notifier import __version__, signing, transforms
from notifier.config import Settings
from notifier.engine import ssrf
from notifier.models import Message, Outcome, Partner, now_ms
from notifier.retry import parse_retry_after
from notifier.rules import RESERVED_HEADERS
from notifier.telemetry import traces

BODY_CAP = 64 * 1024
EXCERPT = 500
USER_AGENT = f"notifier/{__version__}"


class Body(msgspec.Struct):
    type: str
    timestamp: str
    data: msgspec.Raw


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def render(partner: Partner, message: Message) -> bytes:
    """The body a partner receives: the standard shape, or its transform of it (the one for
    the message's type, under `by_type`). Raises TransformError when the event lacks a path
    the transform requires, or nests too deeply to be transformed."""
    chosen = (
        None if partner.transform is None else transforms.select(partner.transform, message.type)
    )
    if chosen is None:
        return _encode(Body(message.type, message.timestamp, message.data))
    event: dict[str, Any] = {
        "type": message.type,
        "timestamp": message.timestamp,
        "data": _decode(message.data),
    }
    try:
        return _encode(transforms.apply(chosen, event))
    except RecursionError:
        raise transforms.TransformError("the event nests too deeply to be transformed") from None


def request_headers(
    partner: Partner,
    message: Message,
    body: bytes,
    keys: Sequence[signing.Key],
    now: float | None = None,
) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    headers = {k: v for k, v in partner.headers.items() if k.lower() not in RESERVED_HEADERS}
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(keys, message.id, timestamp, body),
        }
    )
    return headers


class Sender:
    """Owns the one shared connection pool all deliveries of a process go through."""

    def __init__(self, settings: Settings, tracer: Tracer | None = None) -> None:
        self.settings = settings
        self.tracer = tracer
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        connector = ssrf.guarded_connector(
            self.settings.allowed_networks,
            limit=0,
            limit_per_host=0,
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def send(
        self, partner: Partner, message: Message, keys: Sequence[signing.Key], attempt: int = 1
    ) -> Coroutine[Any, Any, Outcome]:
        """Send one message. Untraced, this is the attempt itself: a coroutine less to resume
        at every step of every request, on the delivery process's hottest path."""
        if self.tracer is None:
            return self._attempt(partner, message, keys)
        return self._traced(self.tracer, partner, message, keys, attempt)

    async def _traced(
        self,
        tracer: Tracer,
        partner: Partner,
        message: Message,
        keys: Sequence[signing.Key],
        attempt: int,
    ) -> Outcome:
        span = traces.delivery_span(tracer, partner, message, attempt)
        try:
            # current while it runs, so anything logged meanwhile carries its ids
            with trace.use_span(span, end_on_exit=False):
                outcome = await self._attempt(partner, message, keys)
        except asyncio.CancelledError:
            span.end()
            raise
        context = span.get_span_context()
        outcome.trace_id = format(context.trace_id, "032x")
        outcome.span_id = format(context.span_id, "016x")
        traces.end_delivery_span(span, outcome)
        return outcome

    async def _attempt(
        self, partner: Partner, message: Message, keys: Sequence[signing.Key]
    ) -> Outcome:
        started = time.perf_counter()
        sent_ms = now_ms()
        assert self._session is not None, "use Sender as an async context manager"
        try:
            body = render(partner, message)
        except transforms.TransformError as exc:
            # nothing is sent: the message cannot be made for this partner, and a retry
            # would make it no better
            return _failed(started, sent_ms, "transform", f"transform: {exc}"[:EXCERPT])
        try:
            headers = request_headers(partner, message, body, keys)
            async with self._session.post(
                partner.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                excerpt = await _read_capped(resp)
                latency = (time.perf_counter() - started) * 1000
                text = excerpt[:EXCERPT].decode(errors="replace")
                if 200 <= resp.status < 300:
                    return Outcome(
                        ok=True,
                        status=resp.status,
                        latency_ms=latency,
                        excerpt=text,
                        sent_ms=sent_ms,
                    )
                retry_after = None
                if resp.status in (429, 503):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                return Outcome(
                    ok=False,
                    kind=f"http_{resp.status // 100}xx",
                    status=resp.status,
                    latency_ms=latency,
                    error=_status_error(resp, excerpt),
                    retry_after=retry_after,
                    excerpt=text,
                    sent_ms=sent_ms,
                )
        except ssrf.BlockedAddressError as exc:
            return _failed(started, sent_ms, "ssrf", str(exc))
        except TimeoutError:
            return _failed(
                started, sent_ms, "timeout", f"timeout after {self.settings.request_timeout:g}s"
            )
        except aiohttp.ClientSSLError as exc:
            return _failed(started, sent_ms, "tls", f"{type(exc).__name__}: {exc}"[:EXCERPT])
        except aiohttp.ClientError as exc:
            return _failed(started, sent_ms, "connection", f"{type(exc).__name__}: {exc}"[:EXCERPT])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed attempt, never a dead delivery loop
            return _failed(started, sent_ms, "other", f"{type(exc).__name__}: {exc}"[:EXCERPT])


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """Read at most BODY_CAP bytes; an endless or huge answer is cut, not buffered."""
    data = bytearray()
    while len(data) < BODY_CAP:
        chunk = await resp.content.read(BODY_CAP - len(data))
        if not chunk:
            break
        data += chunk
    if not resp.content.at_eof():
        resp.close()  # drop the connection rather than drain the rest
    return bytes(data)


def _status_error(resp: aiohttp.ClientResponse, excerpt: bytes) -> str:
    text = excerpt[:EXCERPT].decode(errors="replace")
    if 300 <= resp.status < 400:
        return f"HTTP {resp.status}: redirects are not followed"
    return f"HTTP {resp.status}: {text}" if text else f"HTTP {resp.status}"


def _failed(started: float, sent_ms: int, kind: str, error: str) -> Outcome:
    return Outcome(
        ok=False,
        kind=kind,
        latency_ms=(time.perf_counter() - started) * 1000,
        error=error,
        sent_ms=sent_ms,
    )
