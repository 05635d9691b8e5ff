"""Partners over HTTPS, with a CA made by the test and trusted through SSL_CERT_FILE (the
standard OpenSSL setting the README documents): delivery works and is signed, a certificate
no trusted CA signed is a `tls` failure that is retried and then dead-lettered, and the SSRF
guard holds for `POST /v1/partners/{id}/test` as it does for deliveries."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import standardwebhooks
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.redis import keys
from notifier.store import Store
from notifier.testing import Endpoint
from notifier.testing_tls import Certificates, make_certificates
from tests.helpers import TOKEN, Spawn, entries, eventually, free_port, publish, register
from tests.integration.test_observability import scrape, value

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def serving(certificates: Certificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificates.server_cert), str(certificates.server_key))
    return context


@pytest.fixture
async def endpoints(tmp_path: Path) -> AsyncIterator[tuple[Path, Endpoint, Endpoint]]:
    """The trusted CA's file, an endpoint it signed for, and one signed by a CA nobody
    trusts."""
    trusted = make_certificates(tmp_path / "trusted")
    stranger = make_certificates(tmp_path / "stranger", ca_name="a CA nobody trusts")
    good = await Endpoint().start(tls=serving(trusted))
    bad = await Endpoint().start(tls=serving(stranger))
    yield trusted.ca, good, bad
    await good.stop()
    await bad.stop()


async def test_https_partners_with_a_ca_trusted_through_ssl_cert_file(
    redis: Redis,
    settings: Settings,
    spawn: Spawn,
    endpoints: tuple[Path, Endpoint, Endpoint],
) -> None:
    ca, good, bad = endpoints
    assert good.url.startswith("https://") and bad.url.startswith("https://")
    good_id, secret = await register(redis, settings, "good", good.url, ["order.created"])
    bad_id, _ = await register(redis, settings, "bad", bad.url, ["order.created"])
    metrics_addr = f"127.0.0.1:{free_port()}"
    spawn("run", extra={"SSL_CERT_FILE": str(ca), "NOTIFIER_METRICS_ADDR": metrics_addr})
    await publish(redis, "order.created", {"order_id": 1}, event_id="ord-1")
    await good.wait_for(1, timeout=30)
    payload = standardwebhooks.Webhook(secret).verify(
        good.received[0].body, good.received[0].headers
    )
    assert payload["data"] == {"order_id": 1}

    # the untrusted certificate: every attempt fails as `tls`, retried to the dead letters
    async def dead_lettered() -> bool:
        return bool(await redis.xlen(keys.DEAD))

    await eventually(dead_lettered, 30, "the untrusted partner's message to be dead-lettered")
    attempts = await Store(redis, settings).attempts(bad_id)
    assert len(attempts) == len(settings.retry_schedule) + 1
    assert all(not a.ok and a.status is None for a in attempts)
    assert all("certificate verify failed" in (a.error or "") for a in attempts), attempts
    [(_, letter)] = await entries(redis, keys.DEAD)
    assert letter[b"partner"].decode() == bad_id
    assert bad.received == []  # no request got past the handshake
    async with aiohttp.ClientSession() as http:
        samples = await scrape(http, metrics_addr)
    failures = "notifier_delivery_failures_total"
    assert value(samples, failures, partner=bad_id, kind="tls") == len(attempts)
    assert value(samples, failures, partner=good_id) == 0


async def test_the_ssrf_guard_holds_for_a_test_ping_over_https(
    redis: Redis,
    settings: Settings,
    spawn: Spawn,
    endpoints: tuple[Path, Endpoint, Endpoint],
) -> None:
    """The same HTTPS partner tested through two api processes that trust its CA: one whose
    NOTIFIER_ALLOWED_NETWORKS exempts loopback reaches it, the other refuses the address
    before connecting."""
    ca, good, _ = endpoints
    pid, _ = await register(redis, settings, "good", good.url, ["*"])
    exempt, guarded = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    spawn("api", extra={"SSL_CERT_FILE": str(ca), "NOTIFIER_API_ADDR": exempt})
    spawn(
        "api",
        extra={
            "SSL_CERT_FILE": str(ca),
            "NOTIFIER_API_ADDR": guarded,
            "NOTIFIER_ALLOWED_NETWORKS": "",
        },
    )
    async with aiohttp.ClientSession() as http:

        async def test_ping(addr: str) -> dict[str, object] | None:
            url = f"http://{addr}/v1/partners/{pid}/test"
            try:
                async with http.post(url, headers=AUTH) as resp:
                    assert resp.status == 200, await resp.text()
                    answer: dict[str, object] = await resp.json()
                    return answer
            except aiohttp.ClientConnectionError:
                return None  # not listening yet

        async def answers(addr: str) -> bool:
            return await test_ping(addr) is not None

        await eventually(lambda: answers(guarded), 20, "the guarded api")
        refused = await test_ping(guarded)
        assert refused is not None and refused["ok"] is False and refused["status"] is None
        assert "refused 127.0.0.1" in str(refused["error"]), refused
        assert good.received == []
        await eventually(lambda: answers(exempt), 20, "the exempt api")
        reached = await test_ping(exempt)
        assert reached is not None and reached["ok"] is True and reached["status"] == 200
    assert len(good.received) == 2  # the exempt api's two pings, the guarded one's none
