"""docs/signatures.md's verifiers work as written: its Python and its Node function accept a
request notifier signed (v1a, during a rotation too) and refuse a tampered or stale one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from notifier import signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "signatures.md"


def block(language: str) -> str:
    found = re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(found) == 1, f"one ```{language} block in {DOC.name}"
    return str(found[0])


def signed(body: bytes, timestamp: int) -> tuple[str, dict[str, str]]:
    """A request as a v1a partner receives it during a rotation: two keys, one trusted."""
    old_private, old_public = signing.generate_key_pair()
    new_private, _ = signing.generate_key_pair()
    keys = [signing.secret_key(new_private), signing.secret_key(old_private)]
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.signature_header(keys, "msg_1", timestamp, body),
    }
    return old_public, headers


def requests() -> list[tuple[str, dict[str, str], bytes, bool]]:
    body = b'{"type":"payout.sent","timestamp":"2026-11-24T12:00:00.000Z","data":{"n":1}}'
    public, headers = signed(body, int(time.time()))
    stale_public, stale = signed(body, int(time.time()) - 3600)
    return [
        (public, headers, body, True),
        (public, headers, body.replace(b"1}", b"2}"), False),
        (stale_public, stale, body, False),
    ]


def test_the_python_verifier() -> None:
    scope: dict[str, Any] = {}
    exec(block("python"), scope)
    for public, headers, body, expected in requests():
        assert scope["verify"](public, headers, body) is expected


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_verifier(tmp_path: Path) -> None:
    (tmp_path / "verify.js").write_text(block("js"))
    cases = [
        {"key": p, "headers": h, "body": b.decode(), "expected": e} for p, h, b, e in requests()
    ]
    script = (
        "const { verify } = require('./verify.js');"
        f"const cases = {json.dumps(cases)};"
        "console.log(JSON.stringify(cases.map("
        "c => verify(c.key, c.headers, Buffer.from(c.body)) === c.expected)));"
    )
    done = subprocess.run(
        ["node", "-e", script], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True, True]
