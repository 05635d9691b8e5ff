"""SSRF guard: partner URLs must not reach loopback, private or other internal addresses.

A webhook URL is chosen by whoever registers a partner, so without a guard notifier would POST
signed payloads to anything its host can reach: the metadata service at 169.254.169.254, Redis
on 127.0.0.1, the admin API, the office network. Checking the URL when it is registered is not
enough on its own: a hostname can resolve to a public address then and a private one at delivery
time (DNS rebinding), and an IP literal never passes through a resolver at all. So the final
check sits in the connector, on every address a connection is about to be opened to, and an
address it refuses never gets a TCP connection attempt.

Operators who do deliver to internal partners list those networks in NOTIFIER_ALLOWED_NETWORKS;
an address inside one of them is accepted whatever its class.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.tracing import Trace

from notifier.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HINT = "NOTIFIER_ALLOWED_NETWORKS"


def _nets(reason: str, *cidrs: str) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr in cidrs)


#: Named special-purpose ranges, most specific first. Spelled out rather than left to
#: `is_private`/`is_global` alone because those changed between Python releases, and the
#: reason an operator reads should name the range, not just say "not global".
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = (
    *_nets("unspecified address", "0.0.0.0/32", "::/128"),
    *_nets("'this network' address (0.0.0.0/8)", "0.0.0.0/8"),
    *_nets("loopback address", "127.0.0.0/8", "::1/128"),
    *_nets("link-local address", "169.254.0.0/16", "fe80::/10"),
    *_nets("multicast address", "224.0.0.0/4", "ff00::/8"),
    *_nets("private address (RFC 1918)", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    *_nets("shared address space (CGNAT)", "100.64.0.0/10"),
    *_nets("unique local address", "fc00::/7"),
    *_nets("site-local address (deprecated)", "fec0::/10"),
    *_nets("broadcast address", "255.255.255.255/32"),
    *_nets("reserved address", "240.0.0.0/4"),
    *_nets(
        "documentation address",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ),
    *_nets("benchmarking address", "198.18.0.0/15", "2001:2::/48"),
)

#: Well-known NAT64 prefix (RFC 6052): the gateway connects on to the IPv4 address in the
#: last 32 bits, so that embedded address is the real destination.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddressError(aiohttp.ClientConnectionError):
    """A connection was refused before it was attempted: every address for the host is barred.

    Derives from ClientConnectionError but deliberately not from OSError: the connector wraps
    an OSError raised during resolution in ClientConnectorDNSError, which would hide this type
    from callers who want to tell a policy refusal from a network failure.
    """

    def __init__(self, host: str, refused: Sequence[tuple[str, str]]) -> None:
        self.host = host
        self.refused = tuple(refused)
        if len(self.refused) == 1:
            addr, reason = self.refused[0]
            target = addr if addr == host else f"{addr} for {host}"
            message = f"refused {target}: {reason} (allow it with {_HINT})"
        else:
            listed = ", ".join(f"{addr} ({reason})" for addr, reason in self.refused)
            message = f"refused every address for {host}: {listed}; allow them with {_HINT}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.refused))


def refusal(ip: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Return why `ip` must not be contacted, or None when it may be.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the IPv4
    address they lead to, since a dual-stack socket or a gateway connects there.
    """
    if any(ip in net for net in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        mapped = ip.ipv4_mapped
        if mapped is not None:
            inner = refusal(mapped, allowed)
            return None if inner is None else f"IPv4-mapped form of {mapped} ({inner})"
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            inner = refusal(embedded, allowed)
            return None if inner is None else f"NAT64 form of {embedded} ({inner})"
        if ip.sixtofour is not None:
            inner = refusal(ip.sixtofour, allowed)
            if inner is not None:
                return f"6to4 form of {ip.sixtofour} ({inner})"
    for net, reason in _SPECIAL:
        if ip in net:
            return reason
    if ip.is_reserved:
        return "reserved address"
    if not ip.is_global:
        return "special-purpose address (not globally routable)"
    return None


class _GuardedConnector(aiohttp.TCPConnector):
    """TCPConnector that drops refused addresses before any connection is attempted.

    `_resolve_host` is the one place every direct connection gets its addresses from, IP
    literals included (they skip the resolver), and it runs again for each new connection,
    so a cached or re-resolved address is judged each time.
    """

    def __init__(self, allowed: Sequence[IPNetwork], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._allowed = tuple(allowed)

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        resolved = await super()._resolve_host(host, port, traces=traces)
        kept: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for entry in resolved:
            addr = entry["host"]
            try:
                reason = refusal(ipaddress.ip_address(addr), self._allowed)
            except ValueError:
                reason = "not an IP address"
            if reason is None:
                kept.append(entry)
            else:
                refused.append((addr, reason))
        if not kept:
            raise BlockedAddressError(host, refused or [(host, "resolved to no address")])
        return kept


def guarded_connector(
    allowed: Sequence[IPNetwork], **connector_kwargs: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector that refuses non-public addresses outside `allowed` at connect time.

    `connector_kwargs` go to TCPConnector unchanged (limit, ttl_dns_cache, resolver, ssl...).
    Through a proxy only the proxy's own address is checked, so do not configure one.
    """
    return _GuardedConnector(allowed, **connector_kwargs)
