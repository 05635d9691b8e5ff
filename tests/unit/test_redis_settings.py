"""REDIS_URL in every form notifier takes, the TLS and Cluster settings, and the rule that no
message shows a password: what start-up refuses, and how it says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier import config
from notifier.redis import urls
from notifier.redis.urls import Sentinels
from notifier.testing_tls import Certificates, make_certificates

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def refused(env: dict[str, str]) -> str:
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    return str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        f"redis://notifier:{PASSWORD}@redis.internal:6380/3",
        f"rediss://notifier:{PASSWORD}@redis.internal:6380",
        "rediss://[::1]:6380/0?ssl_cert_reqs=required",
        "unix:///run/redis/redis.sock?db=2",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2,[fd00::3]:26380/mymaster/2",
        f"rediss+sentinel://notifier:{PASSWORD}@s1:26379/mymaster",
    ],
)
def test_each_documented_url_form_is_accepted(url: str) -> None:
    assert config.load({"REDIS_URL": url}).redis_url == url


def test_a_sentinel_url_is_read_into_hosts_service_db_and_credentials() -> None:
    url = (
        "rediss+sentinel://app:p%40ss%2Fw@10.0.0.1,10.0.0.2:26380,[fd00::3]:1/my%20primary/4"
        "?sentinel_username=watcher&sentinel_password=x%26y"
    )
    assert urls.sentinels(url) == Sentinels(
        hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("fd00::3", 1)),
        service="my primary",
        db=4,
        username="app",
        password="p@ss/w",
        sentinel_username="watcher",
        sentinel_password="x&y",
        tls=True,
    )
    assert urls.sentinels("redis+sentinel://h/mymaster/") == Sentinels((("h", 26379),), "mymaster")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "must start with redis://"),
        ("http://redis:6379", "must start with redis://"),
        ("redis+sentinel://10.0.0.1:26379", "names no service"),
        ("redis+sentinel:///mymaster", "names no sentinel"),
        ("redis+sentinel://h:port/mymaster", "port that is not a number"),
        ("redis+sentinel://h/mymaster/zero", "database index that is not a number"),
        ("redis+sentinel://h/mymaster/0/extra", "more than /<service name>/<db>"),
        ("redis+sentinel://h/mymaster?db=2", "unknown query parameter 'db'"),
        ("redis://h:6379/zero", "database index that is not a number"),
        ("redis://h:99999/0", "port that is not a number"),
        ("unix://run/redis.sock", "absolute path"),
    ],
)
def test_a_bad_url_is_refused_naming_redis_url(url: str, says: str) -> None:
    text = refused({"REDIS_URL": url})
    assert text.startswith("REDIS_URL=") and says in text


@pytest.mark.parametrize(
    "url",
    [
        f"redis://notifier:{PASSWORD}@h:6379/zero",
        f"redis://notifier:{PASSWORD}/x@h:6379/0",  # an unescaped / ends the host for urllib
        f"redis://:{PASSWORD}?@h:notaport/0",
        f"rediss+sentinel://notifier:{PASSWORD}@h1:1,h2:x/mymaster",
        f"redis+sentinel://h1/mymaster?sentinel_password={PASSWORD}&oops=1",
        f"redis+sentinel://notifier:{PASSWORD}@h1",
        f"ftp://notifier:{PASSWORD}@h1",
        f"notifier:{PASSWORD}@h1:6379",
    ],
)
def test_no_refusal_of_a_url_repeats_its_password(url: str) -> None:
    text = refused({"REDIS_URL": url})
    assert "REDIS_URL" in text
    assert PASSWORD not in text and PASSWORD[:6] not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://notifier:{PASSWORD}@h:6379/0", "redis://notifier:***@h:6379/0"),
        (f"rediss://:{PASSWORD}@h:6379", "rediss://:***@h:6379"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://notifier@h:6379/0", "redis://notifier@h:6379/0"),
        (f"redis://u:{PASSWORD}/#?@h:1/0", "redis://u:***@h:1/0"),
        (f"redis://h:1/0?password={PASSWORD}&db=1", "redis://h:1/0?password=***&db=1"),
        (
            f"rediss+sentinel://u:{PASSWORD}@a:1,b:2,[::1]:3/m/0?sentinel_password={PASSWORD}",
            "rediss+sentinel://u:***@a:1,b:2,[::1]:3/m/0?sentinel_password=***",
        ),
        (f"u:{PASSWORD}@h", "(not a URL)"),
    ],
)
def test_masked_hides_every_password_a_url_can_carry(url: str, shown: str) -> None:
    assert urls.masked(url) == shown
    assert config.masked(url) == shown


def test_every_password_of_a_url_is_found_to_be_hidden() -> None:
    url = f"rediss+sentinel://u:p%40ss@h/m?sentinel_password={PASSWORD}&sentinel_username=w"
    assert urls.passwords(url) == ["p@ss", PASSWORD]
    assert urls.passwords("redis://h:1/0?password=x%26y&db=2") == ["x&y"]
    assert urls.passwords("redis://u@h:1/0") == urls.passwords("redis://h") == []


def test_tls_files_must_be_readable_pem(tmp_path: Path, certs: Certificates) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    text = refused(
        {
            "REDIS_URL": "rediss://h:6380/0",
            "NOTIFIER_REDIS_CA": str(tmp_path / "missing.pem"),
            "NOTIFIER_REDIS_CERT": str(not_pem),
            "NOTIFIER_REDIS_KEY": str(certs.client_key),
        }
    )
    assert "NOTIFIER_REDIS_CA=" in text and "cannot be read: No such file" in text
    assert "NOTIFIER_REDIS_CERT=" in text and "is not a PEM file" in text
    # the key is fine, and its pair was already refused: one mistake, one message
    assert "NOTIFIER_REDIS_KEY" not in text


def test_tls_settings_must_go_together(certs: Certificates) -> None:
    text = refused({"REDIS_URL": "rediss://h/0", "NOTIFIER_REDIS_CERT": str(certs.client_cert)})
    assert "NOTIFIER_REDIS_CERT needs NOTIFIER_REDIS_KEY" in text
    text = refused({"REDIS_URL": "rediss://h/0", "NOTIFIER_REDIS_KEY": str(certs.client_key)})
    assert "NOTIFIER_REDIS_KEY needs NOTIFIER_REDIS_CERT" in text
    text = refused({"REDIS_URL": "redis://h/0", "NOTIFIER_REDIS_CA": str(certs.ca)})
    assert "NOTIFIER_REDIS_CA need a TLS REDIS_URL" in text
    mismatched = {
        "REDIS_URL": "rediss+sentinel://h/m",
        "NOTIFIER_REDIS_CERT": str(certs.client_cert),
        "NOTIFIER_REDIS_KEY": str(certs.server_key),
    }
    assert "are not a certificate and its unencrypted private key" in refused(mismatched)
    no_ca = {"REDIS_URL": "rediss://h/0", "NOTIFIER_REDIS_CA": str(certs.client_key)}
    assert "NOTIFIER_REDIS_CA holds no CA certificate" in refused(no_ca)
    fine = config.load({"REDIS_URL": "rediss+sentinel://h/m", **certs.client_env()})
    assert (fine.redis_ca, fine.redis_cert, fine.redis_key) == (
        str(certs.ca),
        str(certs.client_cert),
        str(certs.client_key),
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h/m", "cannot use a sentinel REDIS_URL"),
        ("unix:///run/redis.sock", "needs a redis:// or rediss:// REDIS_URL"),
        ("redis://h:7000/2", "needs database 0"),
    ],
)
def test_a_cluster_needs_a_url_of_a_node(url: str, says: str) -> None:
    text = refused({"REDIS_URL": url, "NOTIFIER_REDIS_CLUSTER": "1"})
    assert text.startswith("NOTIFIER_REDIS_CLUSTER=1") and says in text
    assert config.load({"REDIS_URL": "rediss://h:7000", "NOTIFIER_REDIS_CLUSTER": "1"})
    assert "NOTIFIER_REDIS_CLUSTER='maybe'" in refused({"NOTIFIER_REDIS_CLUSTER": "maybe"})


def test_every_redis_mistake_is_reported_at_once(certs: Certificates) -> None:
    text = refused(
        {
            "REDIS_URL": f"redis+sentinel://u:{PASSWORD}@h/m",
            "NOTIFIER_REDIS_CLUSTER": "1",
            "NOTIFIER_REDIS_CERT": str(certs.client_cert),
            "NOTIFIER_RETRY_SCHEDULE": "soon",
        }
    )
    for says in (
        "NOTIFIER_RETRY_SCHEDULE",
        "NOTIFIER_REDIS_CERT need a TLS REDIS_URL",
        "NOTIFIER_REDIS_CERT needs NOTIFIER_REDIS_KEY",
        "NOTIFIER_REDIS_CLUSTER=1 cannot use a sentinel",
    ):
        assert says in text
    assert PASSWORD not in text
