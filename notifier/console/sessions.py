"""Console sessions: signed in with the admin token, kept in Redis so that every api process
behind one address knows them.

The cookie holds only a random session id. Redis keeps, under the id's SHA-256 (so what Redis
holds cannot be replayed as a cookie), the session's CSRF token, with a TTL of the session's
whole life from sign-in, and for a moment a notice for the session's next page (what an action
came to, shown after its redirect). The admin token itself is compared and forgotten: it is
never stored, logged or put in a page.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any, Literal

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from notifier.redis import keys

COOKIE = "notifier_console"
#: A session's whole life: an operator signs in again after it.
LIFETIME_S = 8 * 3600
NOTICE_TTL_S = 300
#: A session id is 43 characters of base64url; anything longer is no id of ours.
MAX_ID = 64


class Session(msgspec.Struct, frozen=True):
    id: str  # the cookie's value
    csrf: str


#: The request's session, once the console's guard found it.
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)


class Notice(msgspec.Struct, frozen=True):
    """What the next page tells: how an action went."""

    kind: Literal["ok", "error"]
    text: str


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode(errors="surrogateescape")).hexdigest()


class Sessions:
    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes

    async def start(self) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        await self.redis.set(
            keys.CONSOLE_SESSION + _hashed(session.id), session.csrf, ex=LIFETIME_S, nx=True
        )
        return session

    async def find(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > MAX_ID:
            return None
        csrf = await self.redis.get(keys.CONSOLE_SESSION + _hashed(session_id))
        return None if csrf is None else Session(id=session_id, csrf=csrf.decode())

    async def end(self, session: Session) -> None:
        hashed = _hashed(session.id)
        # two keys, one command each: on a Cluster they may live in different slots
        await self.redis.delete(keys.CONSOLE_SESSION + hashed)
        await self.redis.delete(keys.CONSOLE_NOTICE + hashed)

    async def tell(self, session: Session, notice: Notice) -> None:
        key = keys.CONSOLE_NOTICE + _hashed(session.id)
        await self.redis.set(key, msgspec.json.encode(notice), ex=NOTICE_TTL_S)

    async def notice(self, session: Session) -> Notice | None:
        """The notice for this page, taken: it is shown once."""
        key = keys.CONSOLE_NOTICE + _hashed(session.id)
        # GET and DEL in one MULTI: the commands the README's ACL rule already grants
        async with self.redis.pipeline(transaction=True) as pipe:
            raw, _ = await pipe.get(key).delete(key).execute()
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Notice)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)


def session_of(request: web.Request) -> Session:
    """The signed-in session of a request the guard let through."""
    return request[SESSION]


def token_matches(given: str, expected: str | None) -> bool:
    """Whether a submitted secret is the expected one, in constant time; never without one."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode(errors="surrogateescape"), expected.encode())


def needs_secure_cookie(request: web.Request) -> bool:
    """Secure, unless the console is reached over plain http on a loopback address (where a
    browser would not send a Secure cookie back, and nothing travels off the machine). The
    address is the socket's, not the Host header a client chooses; a proxy that says it took
    the request over https gets a Secure cookie."""
    if request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        return True
    return not served_on_loopback(request)


def served_on_loopback(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return False
    try:
        return ipaddress.ip_address(str(sockname[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=LIFETIME_S,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=needs_secure_cookie(request),
    )


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(
        COOKIE,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=needs_secure_cookie(request),
    )
