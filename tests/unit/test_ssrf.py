"""SSRF guard: address classes, URL validation, and the connector against a real local server."""

from __future__ import annotations

import pickle
import re
import socket
from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from notifier.engine.ssrf import BlockedAddressError, guarded_connector, refusal
from notifier.rules import check_url

LOOPBACK_ONLY = [ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.255", "CGNAT"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1 (loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1 (private"),
        ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254 (link-local"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1 (loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254 (link-local"),
        ("2002:7f00:1::1", "6to4 form of 127.0.0.1 (loopback"),
        ("2002:c0a8:101::1", "6to4 form of 192.168.1.1 (private"),
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible form
        ("2001::1", "not globally routable"),  # Teredo
    ],
)
def test_refuses_non_public_addresses(address: str, reason: str) -> None:
    got = refusal(ip_address(address), ())
    assert got is not None and reason in got


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "100.128.0.1",
        "172.32.0.1",
        "192.169.0.1",
    ],
)
def test_accepts_public_addresses(address: str) -> None:
    assert refusal(ip_address(address), ()) is None


def test_allowed_networks_override_every_class() -> None:
    allowed = [
        ip_network("10.0.0.0/8"),
        ip_network("127.0.0.0/8"),
        ip_network("fc00::/7"),
        ip_network("169.254.169.254/32"),
    ]
    for address in (
        "10.1.2.3",
        "127.0.0.1",
        "fd00::5",
        "169.254.169.254",
        "::ffff:127.0.0.1",
        "::ffff:10.9.9.9",
        "64:ff9b::a00:1",
    ):
        assert refusal(ip_address(address), allowed) is None, address
    # Only the listed networks: neighbours stay refused.
    for address in ("192.168.1.1", "169.254.169.253", "::1", "100.64.0.1"):
        assert refusal(ip_address(address), allowed) is not None, address


def test_check_url_accepts_and_normalises() -> None:
    assert check_url("https://example.com/hook", allow_http=False) == "https://example.com/hook"
    assert check_url("HTTPS://Example.COM:8443/a?b=1#frag", allow_http=False) == (
        "https://example.com:8443/a?b=1"
    )
    assert check_url("http://example.com/hook", allow_http=True) == "http://example.com/hook"
    assert check_url("https://[2606:4700::1]/x", allow_http=False) == "https://[2606:4700::1]/x"
    assert check_url(" https://bücher.example/h ", allow_http=False) == (
        "https://xn--bcher-kva.example/h"
    )


@pytest.mark.parametrize(
    ("url", "allow_http", "message"),
    [
        ("http://example.com/hook", False, "scheme must be https"),
        ("ftp://example.com/file", True, "scheme must be https or http, not ftp"),
        ("file:///etc/passwd", True, "scheme must be"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", True, "scheme must be"),
        ("javascript:alert(1)", True, "scheme must be"),
        ("example.com/hook", False, "scheme must be https, not none"),
        ("https:///hook", False, "no host"),
        ("https://", False, "no host"),
        ("https://user:secret@example.com/hook", False, "credentials"),
        ("https://user@example.com/hook", False, "credentials"),
        ("https://:secret@example.com/hook", False, "credentials"),
        ("https://example.com:99999/hook", False, "(?i)port"),
        ("https://example.com:abc/hook", False, "(?i)port"),
        ("https://exa mple.com/hook", False, "not a valid hostname"),
        ("https://exa%00mple.com/hook", False, "not a valid hostname"),
    ],
)
def test_check_url_rejects(url: str, allow_http: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_url(url, allow_http=allow_http)


def test_check_url_never_echoes_a_password() -> None:
    for url in (
        "https://user:hunter2@example.com/h",
        "ftp://u:hunter2@example.com/",
        "https://u:hunter2@example.com:99999/",
        # no scheme: read as scheme "u" with no host, so no userinfo either
        "u:hunter2@example.com/h",
        "mailto:u:hunter2@example.com",
    ):
        with pytest.raises(ValueError) as caught:
            check_url(url, allow_http=False)
        assert "hunter2" not in str(caught.value)


def test_error_message_names_host_address_and_remedy() -> None:
    err = BlockedAddressError("example.com", [("127.0.0.1", "loopback address")])
    assert str(err) == (
        "refused 127.0.0.1 for example.com: loopback address "
        "(allow it with NOTIFIER_ALLOWED_NETWORKS)"
    )
    assert isinstance(err, aiohttp.ClientConnectionError)
    both = BlockedAddressError("h.test", [("10.0.0.1", "private"), ("::1", "loopback")])
    assert "10.0.0.1 (private), ::1 (loopback)" in str(both)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


# --- connector against a real server -------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[str]]]:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield srv, seen
    finally:
        await srv.close()


async def _post(url: str, connector: aiohttp.TCPConnector) -> int:
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, json={"event": "x"}, allow_redirects=False) as resp,
    ):
        await resp.read()
        return resp.status


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "loopback"), ("[::ffff:127.0.0.1]", "IPv4-mapped"), ("localhost", "loopback")],
)
async def test_blocks_loopback_before_connecting(
    server: tuple[TestServer, list[str]], host: str, reason: str
) -> None:
    srv, seen = server
    url = f"http://{host}:{srv.port}/hook"
    with pytest.raises(BlockedAddressError, match=reason) as caught:
        await _post(url, guarded_connector(()))
    assert "NOTIFIER_ALLOWED_NETWORKS" in str(caught.value)
    assert seen == []


async def test_legacy_numeric_ipv4_does_not_slip_through(
    server: tuple[TestServer, list[str]],
) -> None:
    srv, seen = server
    for host in ("127.1", "2130706433", "0x7f000001"):
        with pytest.raises(aiohttp.ClientError):
            await _post(f"http://{host}:{srv.port}/hook", guarded_connector(()))
    assert seen == []


async def test_allowed_network_reaches_server(server: tuple[TestServer, list[str]]) -> None:
    srv, seen = server
    status = await _post(f"http://127.0.0.1:{srv.port}/hook?n=1", guarded_connector(LOOPBACK_ONLY))
    assert status == 200
    assert seen == ["/hook?n=1"]


async def test_redirect_to_refused_address_is_blocked(
    server: tuple[TestServer, list[str]],
) -> None:
    """A redirect opens a new connection through the same connector, so it is judged too."""
    srv, seen = server
    resolver = FakeResolver({"metadata.test": ["169.254.169.254"]})
    connector = guarded_connector(LOOPBACK_ONLY, resolver=resolver)
    url = f"http://127.0.0.1:{srv.port}/redirect?to=http://metadata.test/latest"
    async with aiohttp.ClientSession(connector=connector) as session:
        refused = re.escape("169.254.169.254 for metadata.test")
        with pytest.raises(BlockedAddressError, match=refused):
            await session.get(url)
    assert seen == ["/redirect?to=http://metadata.test/latest"]


# --- fake resolver: mixed answers and rebinding ---------------------------------------------


class FakeResolver(AbstractResolver):
    """Answers from a table; each lookup pops the next answer when a host has several."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answer = self.answers[host]
        addrs = answer.pop(0) if answer and isinstance(answer[0], list) else answer
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in addrs
        ]

    async def close(self) -> None:
        pass


async def test_mixed_answer_keeps_only_public_addresses() -> None:
    resolver = FakeResolver(
        {"partner.test": ["10.0.0.5", "93.184.216.34", "::1", "2606:4700:4700::1111"]}
    )
    connector = guarded_connector((), resolver=resolver)
    try:
        kept = await connector._resolve_host("partner.test", 443)
    finally:
        await connector.close()
    assert [entry["host"] for entry in kept] == ["93.184.216.34", "2606:4700:4700::1111"]


async def test_all_private_answer_raises_naming_each_address() -> None:
    resolver = FakeResolver({"partner.test": ["10.0.0.5", "169.254.169.254", "fd00::1"]})
    with pytest.raises(BlockedAddressError) as caught:
        await _post("http://partner.test/hook", guarded_connector((), resolver=resolver))
    err = caught.value
    assert err.host == "partner.test"
    assert [addr for addr, _ in err.refused] == ["10.0.0.5", "169.254.169.254", "fd00::1"]
    assert "refused every address for partner.test" in str(err)


async def test_refused_address_in_mixed_answer_is_never_dialled(
    server: tuple[TestServer, list[str]],
) -> None:
    """The private address comes first; the request succeeds via the allowed one only."""
    srv, seen = server
    resolver = FakeResolver({"partner.test": ["10.0.0.5", "127.0.0.1"]})
    connector = guarded_connector(LOOPBACK_ONLY, resolver=resolver)
    dialled: list[Any] = []
    original = connector._wrap_create_connection

    async def spy(*args: Any, addr_infos: Any, **kwargs: Any) -> Any:
        dialled.extend(info[4][0] for info in addr_infos)
        return await original(*args, addr_infos=addr_infos, **kwargs)

    connector._wrap_create_connection = spy  # type: ignore[method-assign]
    assert await _post(f"http://partner.test:{srv.port}/hook", connector) == 200
    assert dialled == ["127.0.0.1"]
    assert seen == ["/hook"]


async def test_dns_rebinding_is_caught_on_the_next_connection(
    server: tuple[TestServer, list[str]],
) -> None:
    """First lookup is allowed, the second rebinds to a refused address and is blocked."""
    srv, seen = server
    resolver = FakeResolver({"partner.test": [["127.0.0.1"], ["169.254.169.254"]]})
    connector = guarded_connector(
        LOOPBACK_ONLY, resolver=resolver, use_dns_cache=False, force_close=True
    )
    url = f"http://partner.test:{srv.port}/hook"
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url) as resp:
            assert resp.status == 200
        with pytest.raises(BlockedAddressError, match=re.escape("169.254.169.254")):
            await session.post(url)
    assert resolver.lookups == ["partner.test", "partner.test"]
    assert seen == ["/hook"]
