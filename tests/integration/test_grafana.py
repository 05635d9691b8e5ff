"""Grafana, Prometheus and compose.yaml: the dashboards and alert rules against a real
Prometheus scraping a real split deployment, and the compose file checked statically (no
Docker engine here): what it mounts exists, what Prometheus scrapes is what it starts, and
every NOTIFIER_* variable it sets is one notifier reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from notifier.testing import Capacity, ok
from tests.helpers import Endpoint, EndpointFactory, Spawn, eventually, free_port, publish, register

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
RULES = GRAFANA / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE = ROOT / "compose.yaml"
#: Grafana's variables, as a test reads every partner over a short window.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$partner": ".*"}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/setup installs Debian's prometheus"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) for every target of every panel."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((board["uid"], panel["title"], target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    return rules


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: every notifier_* name no label matcher follows (so not
    a label name), and Prometheus's own `up`."""
    names = set(re.findall(r"\b(notifier_[a-z_]+)\b(?!\s*[=!~])", expr))
    if re.search(r"\bup\s*\{", expr):
        names.add("up")
    return names


# ---------------------------------------------------------------- static checks


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml", cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml", cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {rule["alert"] for rule in alert_rules()}
    for needed in (
        "NotifierPartnerErrorRate",
        "NotifierBacklogGrowing",
        "NotifierIngressLag",
        "NotifierPartnerDisabled",
        "NotifierDeadLetters",
    ):
        assert needed in names
        assert needed in (RULES.parent / "alerts.test.yml").read_text(), f"{needed} untested"


def test_grafana_alerting_is_generated_from_the_prometheus_rules() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grafana_alerts.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "alerting" / "notifier.yaml").read_text()
    )
    rules = {r["title"]: r for r in provisioned["groups"][0]["rules"]}
    for rule in alert_rules():
        copy = rules[rule["alert"]]
        assert copy["data"][0]["model"]["expr"] == rule["expr"]
        assert copy["for"] == rule.get("for", "0s")
        assert copy["labels"] == rule["labels"]
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/notifier.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    assert {r["data"][0]["datasourceUid"] for r in rules.values()} <= uids


def test_dashboards_read_only_metrics_notifier_exports() -> None:
    exported = set(
        re.findall(
            r"\| `notifier\.[a-z_.]+` \(`(notifier_[a-z_]+)`\)", (GRAFANA / "README.md").read_text()
        )
    )
    assert len(exported) >= 14, "grafana/README.md lists every metric"
    queries = dashboard_queries()
    assert len(queries) >= 25
    for uid, title, expr in queries:
        for name in metric_names(expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in exported, f"{uid} / {title}: {name} is not a notifier metric"
    for rule in alert_rules():
        for name in metric_names(rule["expr"]) - {"up"}:
            assert name in exported, f"{rule['alert']}: {name} is not a notifier metric"


def test_compose_starts_what_prometheus_scrapes_and_mounts_what_exists() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services: dict[str, Any] = compose["services"]
    assert {"redis", "router", "api", "prometheus", "grafana", "otel-lgtm"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd

    known = {line.split("`")[1] for line in config.table().splitlines()[2:]}
    listening: dict[str, set[int]] = {}
    commands: list[str] = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        env = service.get("environment", {})
        for var in env:
            if var.startswith("NOTIFIER_") or var == "REDIS_URL":
                assert var in known, f"{name} sets {var}, which notifier does not read"
        if service.get("build"):
            commands.append(service["command"][0])
            for var in ("NOTIFIER_METRICS_ADDR", "NOTIFIER_API_ADDR"):
                if var in env:
                    listening.setdefault(name, set()).add(int(env[var].rsplit(":", 1)[1]))
    assert sorted(commands) == ["api", "deliver", "deliver", "router"]

    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("."))
    config_file = next(s for s, t in mounts.items() if t == "/etc/prometheus/prometheus.yml")
    config_path = ROOT / config_file
    checked = promtool("check", "config", config_path.name, cwd=config_path.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scrape = yaml.safe_load(config_path.read_text())
    for rule_file in scrape["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts.values(), f"{rule_file} is not mounted"
    targets = [
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert int(port) in listening.get(host, set()), (
            f"Prometheus scrapes {target}: no such process"
        )
    assert {host for host in listening} == {t.rsplit(":", 1)[0] for t in targets}, (
        "a notifier process Prometheus does not scrape"
    )

    grafana = services["grafana"]
    targets_of = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/notifier.yaml").read_text())
    board_dir = providers["providers"][0]["options"]["path"]
    assert (ROOT / targets_of[board_dir]).resolve() == GRAFANA / "dashboards"
    for kind in ("datasources", "dashboards", "alerting"):
        source = targets_of[f"/etc/grafana/provisioning/{kind}"]
        assert list((ROOT / source).glob("*.yaml")), f"nothing to provision in {source}"


# ---------------------------------------------------------------- a real Prometheus


@contextlib.contextmanager
def running_prometheus(jobs: dict[str, list[str]], workdir: Path) -> Iterator[str]:
    """Debian's Prometheus on loopback, scraping `jobs` every second with our alert rules."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus is missing: scripts/setup installs Debian's prometheus"
    scrape = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={addr}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield addr
    finally:
        proc.kill()
        proc.wait(10)


async def query(http: aiohttp.ClientSession, addr: str, expr: str) -> list[Any]:
    async with http.get(f"http://{addr}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[Any] = body["data"]["result"]
    return result


@pytest.mark.slow
async def test_every_panel_and_alert_has_data_from_a_real_prometheus(
    redis: Redis,
    env: dict[str, str],
    settings: Settings,
    endpoint_factory: EndpointFactory,
    spawn: Spawn,
    tmp_path: Path,
) -> None:
    # a healthy, a failing (dead-lettered after one quick retry), a rate-limited, a paced
    # (over its capacity) and a backlogged (disabled) partner, behind a router, a delivery
    # process and the api
    env["NOTIFIER_RETRY_SCHEDULE"] = "100ms"

    async def fail(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503)

    endpoints: dict[str, Endpoint] = {}
    ids: dict[str, str] = {}
    for name, extra in (
        ("healthy", {}),
        ("failing", {}),
        ("limited", {"rate_limit": "2/second"}),
        ("paced", {}),
        ("backlogged", {"enabled": False}),
    ):
        responders = {"failing": fail, "paced": Capacity(3)}
        endpoints[name] = await endpoint_factory(responders.get(name, ok))
        ids[name], _ = await register(
            redis, settings, name, endpoints[name].url, [f"evt.{name}"], **extra
        )
    jobs = {
        "notifier-router": [f"127.0.0.1:{free_port()}"],
        "notifier-deliver": [f"127.0.0.1:{free_port()}"],
        "notifier-api": [f"127.0.0.1:{free_port()}"],
    }
    spawn("router", extra={"NOTIFIER_METRICS_ADDR": jobs["notifier-router"][0]})
    spawn("deliver", extra={"NOTIFIER_METRICS_ADDR": jobs["notifier-deliver"][0]})
    spawn("api", extra={"NOTIFIER_API_ADDR": jobs["notifier-api"][0]})

    async def produce() -> None:
        """Traffic all along, so that rates over the last seconds are rates of something."""
        n = 0
        while True:
            for name in ("healthy", "failing", "limited", "paced", "backlogged"):
                await publish(redis, f"evt.{name}", {"n": n})
            n += 1
            await asyncio.sleep(0.1)

    producer = asyncio.create_task(produce())
    try:
        with running_prometheus(jobs, tmp_path) as addr:
            async with aiohttp.ClientSession() as http:
                await check_prometheus(http, addr, ids)
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
    assert endpoints["healthy"].received, "the healthy partner received nothing"
    assert not endpoints["backlogged"].received


async def check_prometheus(http: aiohttp.ClientSession, addr: str, ids: dict[str, str]) -> None:
    async def every_target_up() -> bool:
        try:
            up = await query(http, addr, "up")
        except aiohttp.ClientError:
            return False
        return len(up) == 3 and all(s["value"][1] == "1" for s in up)

    await eventually(every_target_up, 30, "Prometheus to scrape every notifier process")

    # every panel of every dashboard, as Grafana would ask for it
    for uid, title, expr in dashboard_queries():
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)

        async def has_data(expr: str = expr) -> bool:
            return bool(await query(http, addr, expr))

        await eventually(has_data, 30, f"data for {uid} / {title}: {expr}")
    async with http.get(
        f"http://{addr}/api/v1/label/partner/values",
        params={"match[]": "notifier_delivery_attempts_total"},
    ) as resp:
        partners = set((await resp.json())["data"])
    assert {ids["healthy"], ids["failing"], ids["limited"]} <= partners  # the $partner list

    # every rule is evaluated without error and reads series that exist
    async def rules_evaluated() -> bool:
        async with http.get(f"http://{addr}/api/v1/rules") as resp:
            groups = (await resp.json())["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == len(alert_rules()) and all(
            rule["health"] == "ok" and rule["lastEvaluation"] > "2000" for rule in rules
        )

    await eventually(rules_evaluated, 30, "Prometheus to evaluate every rule")
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            assert await query(http, addr, f"group({name})"), f"{rule['alert']}: no {name}"

    # and the ones this deployment deserves are raised, for the right partner
    expected = {
        ("NotifierPartnerErrorRate", ids["failing"]),
        ("NotifierPartnerDisabled", ids["backlogged"]),
        ("NotifierDeadLetters", ids["failing"]),
    }

    async def raised() -> bool:
        async with http.get(f"http://{addr}/api/v1/alerts") as resp:
            alerts = (await resp.json())["data"]["alerts"]
        seen = {(a["labels"]["alertname"], a["labels"].get("partner")) for a in alerts}
        return expected <= seen and ("NotifierPartnerErrorRate", ids["healthy"]) not in seen

    await eventually(raised, 30, f"alerts {sorted(expected)}")
